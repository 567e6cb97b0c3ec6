#!/usr/bin/env bash
# Run a command with a throw-away PostgreSQL cluster and Redis on 127.0.0.1.
#
#   bash scripts/with-services.sh CMD [ARGS...]
#
# Installs `postgresql`, `redis-server` (and `bubblewrap`, for the sandbox tests) with
# apt-get when they are missing (needs root or sudo), starts both on free ports in a temporary folder, exports
#   NIGHTOWL_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:PORT/nightowl_test
#   NIGHTOWL_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
# runs CMD, stops both services (also on failure or interrupt) and exits with CMD's status.
# Set NIGHTOWL_SERVICES_KEEP=1 to keep the temporary folder (logs) afterwards.
set -uo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

log() { echo "with-services: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
fi

# --- find or install the binaries --------------------------------------------------
find_pg_bin() {
  # Prints the folder holding initdb/pg_ctl/postgres, newest version first.
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
      echo "$d"
      return 0
    fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    d=$(dirname "$(readlink -f "$(command -v initdb)")")
    if [[ -x $d/pg_ctl && -x $d/postgres ]]; then
      echo "$d"
      return 0
    fi
  fi
  return 1
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get is not available; install $* by hand"
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    die "$* missing and not root (no sudo); install $* by hand"
  fi
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -qq >/dev/null ||
      die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null || die "apt-get install $* failed"
}

PG_BIN=$(find_pg_bin) || { apt_install postgresql; PG_BIN=$(find_pg_bin) || die "postgresql installed but initdb not found"; }
REDIS_SERVER=$(command -v redis-server || true)
if [[ -z $REDIS_SERVER ]]; then
  apt_install redis-server
  REDIS_SERVER=$(command -v redis-server || true)
  [[ -n $REDIS_SERVER ]] || die "redis-server installed but not on PATH"
fi
# bubblewrap is the sandbox's OS boundary for model-written code (tests/security runs every
# escape in it); without it those tests skip, so install it too. Optional: a machine where
# apt cannot install it still runs the rest.
if ! command -v bwrap >/dev/null 2>&1; then
  (apt_install bubblewrap) || log "bubblewrap not installed: the sandbox's bwrap tests will skip"
fi
# The packages may have started system-wide services; we do not use them (own ports).

PYTHON=""
for p in python3 python; do
  if command -v "$p" >/dev/null 2>&1; then PYTHON=$p; break; fi
done

free_port() {
  if [[ -n $PYTHON ]]; then
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}

# --- temp folder, run-as user, cleanup ----------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nightowl-services.XXXXXX") || die "mktemp failed"
chmod 755 "$WORK"
PG_DATA=$WORK/pg
REDIS_DIR=$WORK/redis
mkdir -p "$PG_DATA" "$REDIS_DIR"

# initdb refuses to run as root: run PostgreSQL as the `postgres` user (created by the
# package) when we are root; otherwise as ourselves.
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres ||
    die "cannot create the postgres user"
  chown -R postgres: "$PG_DATA"
  if command -v runuser >/dev/null 2>&1; then
    AS_PG=(runuser -u postgres --)
  else
    AS_PG=(su -s /bin/sh postgres -c)
  fi
fi
as_pg() {
  if [[ ${#AS_PG[@]} -eq 0 ]]; then
    "$@"
  elif [[ ${AS_PG[0]} == su ]]; then
    "${AS_PG[@]}" "$(printf '%q ' "$@")"
  else
    "${AS_PG[@]}" "$@"
  fi
}

alive() {
  # A daemon we started is reparented to PID 1, which (in containers) may never reap
  # it: treat zombies as gone.
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r /proc/$1/status ]] && grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; then
    return 1
  fi
  return 0
}

PG_STARTED=0
REDIS_STARTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ $PG_STARTED -eq 1 ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
      log "warning: could not stop PostgreSQL"
  fi
  if [[ $REDIS_STARTED -eq 1 && -f $REDIS_DIR/redis.pid ]]; then
    local pid
    pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null || true)
    if [[ -n $pid ]]; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
  fi
  if [[ ${NIGHTOWL_SERVICES_KEEP:-0} == 1 ]]; then
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

# --- PostgreSQL ------------------------------------------------------------------------
PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 ||
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 || {
  cat "$WORK/initdb.log" >&2
  die "initdb failed"
}
cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DATA'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_min_messages = warning
EOF
PG_STARTED=1 # before starting: an interrupt during start-up must still stop it
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 start >/dev/null 2>&1 || {
  tail -n 20 "$PG_DATA/server.log" >&2 2>/dev/null
  die "PostgreSQL did not start"
}
PSQL=$PG_BIN/psql
[[ -x $PSQL ]] || PSQL=$(command -v psql || true)
[[ -n $PSQL ]] || die "psql not found"
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt \
  -c "CREATE DATABASE nightowl_test" >/dev/null || die "CREATE DATABASE failed"
log "PostgreSQL $("$PG_BIN/postgres" --version | grep -oE '[0-9]+(\.[0-9]+)+' | head -n1) on 127.0.0.1:$PG_PORT"

# --- Redis -------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
REDIS_STARTED=1
"$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
  --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
  --protected-mode yes >/dev/null || die "redis-server did not start"
for _ in $(seq 100); do
  [[ -s $REDIS_DIR/redis.pid ]] && break
  sleep 0.05
done
if command -v redis-cli >/dev/null 2>&1; then
  for _ in $(seq 100); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
  done
fi
log "Redis on 127.0.0.1:$REDIS_PORT"

export NIGHTOWL_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/nightowl_test"
export NIGHTOWL_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

# --- the command ------------------------------------------------------------------------
# Run in the background and wait, so that INT/TERM reach our trap promptly.
"$@" <&0 &
CMD_PID=$!
trap 'kill -INT $CMD_PID 2>/dev/null; wait $CMD_PID 2>/dev/null; exit 130' INT
trap 'kill -TERM $CMD_PID 2>/dev/null; wait $CMD_PID 2>/dev/null; exit 143' TERM
wait "$CMD_PID"
rc=$?
exit "$rc"
