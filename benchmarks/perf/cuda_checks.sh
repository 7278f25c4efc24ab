#!/usr/bin/env bash
# The GPU checks of the selective scan and the GPU speed figures, in one run, everything under OUT:
#   bash benchmarks/perf/cuda_checks.sh OUT [DATA_PATH]
# DATA_PATH holds ml-1m/ml-1m.inter (RecBole's data_path); without it the ML-1M parts are skipped.
# Needs a CUDA device, the package installed (pip install -e ".[test]") and Triton (PyTorch's CUDA
# builds bring it). Each step writes its own file, so one failing step does not hide the others.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/perf/cuda_checks.sh OUT [DATA_PATH]}
DATA=${2:-}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
step() {  # step NAME TIMEOUT_S COMMAND...: run, keep its output and exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}
step device 60 python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.version.cuda, torch.cuda.get_device_name())"
step tests_scan 600 python -m pytest -q tests/ops/test_scan_triton.py tests/ops/test_selective_scan.py tests/layers
step bench_scan 600 python -m benchmarks.perf.bench_scan --device cuda --batch 2048 --lengths 200 --naive-max-len 0 \
  --out "$OUT/scan_cuda.json"
if [ -n "$DATA" ]; then
  step efficiency 900 python -m benchmarks.perf.efficiency --device cuda --dataset ml-1m --data_path "$DATA" \
    --scan-backend torch triton --out "$OUT/efficiency_ml-1m_cuda.json"
  # The ML-1M full_sequence recipe end to end (data, training to early stopping, test) with the Triton scan.
  step ml1m_recipe_triton 900 python run_recbole_hyper.py --model=Mamba4Rec --dataset=ml-1m --data_path="$DATA" \
    --train_mode=full_sequence --scan_backend=triton --show_progress=False --checkpoint_dir="$OUT/saved"
fi
