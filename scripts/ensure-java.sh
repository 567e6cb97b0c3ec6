#!/usr/bin/env bash
# Make sure Java 11+ is on PATH: TextWorld-Express and ScienceWorld run on a JVM.
#
#   bash scripts/ensure-java.sh        (`make setup` runs it)
#
# If `java` is missing (or older than 11) and apt-get is usable (root or passwordless
# sudo), installs Debian's default-jre-headless, as scripts/with-services.sh installs
# PostgreSQL/Redis. Otherwise prints what to install and exits 1. Set
# NIGHTOWL_SKIP_JAVA=1 to skip (a chat-assistant setup without the `envs` extra).
set -uo pipefail
log() { echo "ensure-java: $*" >&2; }

[[ ${NIGHTOWL_SKIP_JAVA:-0} == 1 ]] && { log "skipped (NIGHTOWL_SKIP_JAVA=1)"; exit 0; }

java_major() {
  # `java -version` prints e.g. 'openjdk version "17.0.9"' or '"1.8.0_392"' on stderr.
  local v
  v=$(java -version 2>&1 | head -1 | sed -E 's/.*version "([^"]+)".*/\1/')
  [[ $v == 1.* ]] && v=${v#1.}
  echo "${v%%[.+_-]*}"
}

if command -v java >/dev/null 2>&1; then
  major=$(java_major)
  if [[ $major =~ ^[0-9]+$ && $major -ge 11 ]]; then
    log "java $major found ($(command -v java))"
    exit 0
  fi
  log "java found but version ${major:-unknown} < 11"
fi

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
fi
if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 || ${#SUDO[@]} -gt 0 ]]; then
  log "installing default-jre-headless with apt-get (TextWorld-Express and ScienceWorld need Java 11+)"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
      default-jre-headless >/dev/null
  if command -v java >/dev/null 2>&1 && [[ $(java_major) -ge 11 ]]; then
    log "java $(java_major) installed"
    exit 0
  fi
  log "error: apt-get install default-jre-headless did not provide Java 11+"
  exit 1
fi
log "error: Java 11+ is required for TextWorld-Express and ScienceWorld, and it cannot be"
log "installed here automatically (no apt-get, or not root and no passwordless sudo)."
log "Install a JRE 11+ (Debian/Ubuntu: sudo apt-get install default-jre-headless;"
log "macOS: brew install openjdk), or set NIGHTOWL_SKIP_JAVA=1 if you do not need the envs."
exit 1
