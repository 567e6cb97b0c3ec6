#!/usr/bin/env bash
# Install the ALFWorld and AppWorld extras (idempotent; `make test-envs` calls it).
#   usage: scripts/install-extras.sh BIN_DIR      (BIN_DIR: the venv's bin, e.g. .venv/bin)
#
# - alfworld goes into the venv itself: it needs only textworld[pddl] (builds
#   fast-downward-textworld from source, ~8 min once; pip caches the wheel) and
#   changes no core package.
# - appworld goes into its own venv, <venv>/extras/appworld: it pins pydantic<2,
#   SQLAlchemy<2, fastapi<0.111, httpx<0.28, rich<14, typer<0.17, which would break
#   nightowl's core. nightowl runs it in a worker process (nightowl/envs/appworld.py).
# - `appworld install` (offline) unpacks the apps into that venv and its test helpers
#   into $NIGHTOWL_HOME/cache/appworld (default .nightowl), not into the home folder.
set -euo pipefail
BIN=$(cd "${1:?usage: scripts/install-extras.sh BIN_DIR}" && pwd)
cd "$(dirname "$0")/.."
HOME_DIR=${NIGHTOWL_HOME:-.nightowl}
# fast-downward-textworld's setup runs `python build.py`; make that the venv's python
# (a pyenv shim there fails inside pip's isolated build environment).
export PATH="$BIN:$PATH"

echo "== alfworld (into $BIN/..)"
if ! "$BIN/python" -c "import alfworld, fast_downward" 2>/dev/null; then
  "$BIN/pip" install -q 'alfworld>=0.4.2' 'textworld[pddl]>=1.6'
fi

AW=$(dirname "$BIN")/extras/appworld
echo "== appworld (into $AW)"
if ! "$AW/bin/python" -c "import appworld" 2>/dev/null; then
  rm -rf "$AW"
  "$BIN/python" -m venv "$AW"
  "$AW/bin/pip" install -q --upgrade pip
  "$AW/bin/pip" install -q 'appworld>=0.1.3'
fi
export APPWORLD_ROOT="$PWD/$HOME_DIR/cache/appworld/root"
export APPWORLD_CACHE="$PWD/$HOME_DIR/cache/appworld/cache"
mkdir -p "$APPWORLD_ROOT" "$APPWORLD_CACHE"
apps_dir=$("$AW/bin/python" -c "import appworld, os; print(os.path.dirname(appworld.__file__))")
if [ ! -f "$apps_dir/apps/simple_note/apis.py" ] || [ ! -f "$APPWORLD_CACHE/tests/lib.py" ]; then
  (cd "$APPWORLD_ROOT" && "$AW/bin/appworld" install)
fi

echo "== sandbox for code actions (bubblewrap + user nightowl-sandbox; docs/sandbox.md)"
SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && { [[ $(id -u) -eq 0 ]] || [[ ${#SUDO[@]} -gt 0 ]]; }; then
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null ||
      { "${SUDO[@]}" apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; } ||
      echo "warning: could not install bubblewrap; code actions use the weaker fallback sandbox"
  else
    echo "warning: bubblewrap missing (install the bubblewrap package); code actions use the fallback sandbox"
  fi
fi
if [[ $(id -u) -eq 0 ]] && ! id nightowl-sandbox >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nightowl-sandbox
fi

echo "== checks"
"$AW/bin/pip" check
# The core must be untouched: pydantic 2, SQLAlchemy 2, and nightowl imports.
"$BIN/python" - <<'PY'
import pydantic, sqlalchemy
import nightowl.config, nightowl.envs.alfworld, nightowl.envs.appworld
assert pydantic.VERSION.startswith("2."), pydantic.VERSION
assert sqlalchemy.__version__.startswith("2."), sqlalchemy.__version__
print(f"core ok: pydantic {pydantic.VERSION}, SQLAlchemy {sqlalchemy.__version__}; alfworld + appworld adapters import")
PY
