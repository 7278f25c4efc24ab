"""Speed and memory benchmarks: each prints a table and writes a JSON file under benchmarks/results/."""
