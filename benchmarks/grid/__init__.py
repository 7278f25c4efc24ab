"""The reproduction grid: models x datasets x modes x seeds, one process and one JSON per cell, and its report."""
