#!/usr/bin/env bash
# Build llama-cpp-python[server] for THIS machine's CPU and install it into its own venv.
#
#   bash scripts/build-llama-server.sh [PYTHON]      (PYTHON: base interpreter, default python3)
#
# Prints the server venv's python on the last line of stdout. Idempotent: the built wheel is
# cached under $NIGHTOWL_HOME/wheels/<flag-set>/ (default .nightowl), keyed by the CPU
# features it was built for, so a machine builds it once (~5 min on 2 cores) and a machine
# with a different CPU builds its own.
#
# Why explicit flags: llama.cpp's default build uses -march=native, which on one VM emitted
# AMX instructions that trap (SIGILL at the first inference; see the probe notes). So the
# build uses GGML_NATIVE=OFF and turns each instruction-set flag ON only when
# /proc/cpuinfo lists it. AMX stays OFF always: the VM that trapped advertised it.
# pip caches built wheels regardless of CMAKE_ARGS, hence --no-cache-dir.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
HOME_DIR=${NIGHTOWL_HOME:-.nightowl}
log() { echo "build-llama-server: $*" >&2; }

[[ -r /proc/cpuinfo ]] || { log "error: /proc/cpuinfo not readable (Linux only)"; exit 1; }
read -r -a CPU_FLAGS <<<"$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)"
has() { local f; for f in "${CPU_FLAGS[@]}"; do [[ $f == "$1" ]] && return 0; done; return 1; }

# ggml option <- /proc/cpuinfo flag
declare -A MAP=(
  [GGML_AVX]=avx [GGML_AVX2]=avx2 [GGML_FMA]=fma [GGML_F16C]=f16c [GGML_BMI2]=bmi2
  [GGML_AVX_VNNI]=avx_vnni [GGML_AVX512]=avx512f [GGML_AVX512_VBMI]=avx512_vbmi
  [GGML_AVX512_VNNI]=avx512_vnni [GGML_AVX512_BF16]=avx512_bf16
)
ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
KEY=""
for opt in $(printf '%s\n' "${!MAP[@]}" | sort); do
  if has "${MAP[$opt]}"; then ARGS+=" -D$opt=ON"; KEY+="${MAP[$opt]}-"; else ARGS+=" -D$opt=OFF"; fi
done
KEY=${KEY%-}
log "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
log "CMAKE_ARGS=$ARGS"

WHEELS="$HOME_DIR/wheels/llama-cpp-python-$VERSION-${KEY:-generic}"
mkdir -p "$WHEELS"
WHEEL=$(ls "$WHEELS"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)
if [[ -z $WHEEL ]]; then
  log "building llama-cpp-python==$VERSION (a few minutes) into $WHEELS"
  start=$(date +%s)
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} CMAKE_ARGS="$ARGS" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir -w "$WHEELS" "llama-cpp-python==$VERSION" >&2
  WHEEL=$(ls "$WHEELS"/llama_cpp_python-*.whl | head -1)
  log "built $WHEEL in $(( $(date +%s) - start )) s"
else
  log "cached wheel $WHEEL"
fi

# Its own venv: the server's pins (sse-starlette, starlette-context, ...) stay out of
# nightowl's environment, and nightowl talks to it over HTTP only.
VENV="$HOME_DIR/llama-server-venv"
if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "$WHEEL[server]" >&2
fi
echo "$PWD/$VENV/bin/python"
