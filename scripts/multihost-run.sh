#!/usr/bin/env bash
# Several hosts on one machine: the same distributed run on two network namespaces that
# share nothing but PostgreSQL and Redis, then on one host; compares the results.
#
#   sudo bash scripts/multihost-run.sh [--tasks 4] [--collect-tasks 4] [--ladder cascade]
#                                      [--max-steps 20] [--out FILE] [--keep]
#
# Needs root (network namespaces, mounts), `ip netns`, PostgreSQL and Redis installed
# (scripts/with-services.sh installs them), Java (make setup) and the project's .venv.
# bench/multihost.py does the work (see its docstring: 10.77.0.0/24, host-a, host-b);
# this script gives it a work folder and, whatever happens to it (even SIGKILL), stops
# every process it recorded, deletes the namespaces, veths and bridge, and removes the
# folder (kept with --keep). Prints a table; writes bench/results/multihost.json.
# Exit status: 0 match, 3 the two runs differ, 1 failure, 2 cannot run here.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${NIGHTOWL_PYTHON:-$ROOT/.venv/bin/python}

log() { echo "multihost-run: $*" >&2; }
die() { log "error: $*"; exit 2; }

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, mounts)"
command -v ip >/dev/null 2>&1 && ip netns list >/dev/null 2>&1 || die "\`ip netns\` is not available"
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is not installed"
command -v java >/dev/null 2>&1 || die "java not found (make setup installs it; twx needs it)"
[[ -x $PY ]] || die "$PY not found (make setup)"

KEEP=0
for a in "$@"; do [[ $a == --keep ]] && KEEP=1; done

WORK=$(mktemp -d /var/tmp/nightowl-multihost.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"

PY_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n $PY_PID ]] && kill -0 "$PY_PID" 2>/dev/null; then
    kill -TERM "$PY_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$PY_PID" 2>/dev/null
  fi
  # what bench/multihost.py started and could not stop (it was killed): by recorded id
  if [[ -f $WORK/pids ]]; then
    while read -r kind pid; do
      [[ -n $pid && -r /proc/$pid/cmdline ]] || continue
      tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$kind" || continue
      case $kind in
        nightowl) kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null ;;
        postgres) kill -QUIT "$pid" 2>/dev/null ;; # immediate shutdown
        *) kill -TERM "$pid" 2>/dev/null ;;
      esac
      log "stopped leftover $kind $pid"
    done <"$WORK/pids"
  fi
  local ns veth
  for ns in host-a host-b; do
    veth=nomh-${ns#host-}
    if ip netns list 2>/dev/null | grep -qw "$ns" && ip -n "$ns" link show "${veth}1" >/dev/null 2>&1; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null && log "deleted leftover namespace $ns"
    fi
    ip link show "${veth}0" >/dev/null 2>&1 && ip link del "${veth}0" 2>/dev/null
  done
  ip link show nomh-br0 >/dev/null 2>&1 && ip link del nomh-br0 2>/dev/null
  if [[ $KEEP -eq 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$ROOT" || exit 2
"$PY" "$ROOT/bench/multihost.py" --work "$WORK" "$@" &
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=""
exit "$rc"
