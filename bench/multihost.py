"""Several hosts on one machine: network namespaces, nothing shared but PostgreSQL and Redis.

    sudo bash scripts/multihost-run.sh [--tasks 4] [--collect-tasks 4] [--keep]

(the script makes the work folder, runs this file and cleans up after it even if it is
killed). As root this builds

    root namespace: bridge nomh-br0 10.77.0.1/24, PostgreSQL + Redis on 10.77.0.1 only,
                    the coordinator (`nightowl collect`, `nightowl run --via celery --watch`)
    host-a:         veth 10.77.0.2/24 + its own loopback, `nightowl worker --queues episodes`
    host-b:         veth 10.77.0.3/24 + its own loopback, `nightowl worker --queues episodes`

Each of the three "hosts" also gets its own hostname (UTS namespace) and its own mount
namespace in which the other hosts' folders, the services' folder, /tmp and the real
~/.cache are covered by empty tmpfs mounts: its NIGHTOWL_HOME, XDG_CACHE_HOME (model
cache: the embedded model is converted from the pip package's GGUF on each host),
HOME, TMPDIR are its own and empty at start, and nothing can reach another host's files
or another namespace's 127.0.0.1. PostgreSQL and Redis are reached only at 10.77.0.1.

Then the same run again on one host: both workers and the coordinator in the root
namespace with one shared home and cache (a fresh database and Redis db, same tasks,
same seeds). Compares per task: success, steps, episodes finished exactly once, tokens,
cost; prints a table and writes bench/results/multihost.json (CPU model, load).

Demo collection is shared through SQL only (the coordinator collects; each worker
rebuilds its FAISS index from SQL). The run uses --no-store-escalations so that which
worker finishes first cannot change what later episodes retrieve (that would make the
two phases differ for reasons that have nothing to do with hosts). The default game is
TWX peckingorder: TWX's coin gold path is not reproducible for a seed (the oracle's path,
hence collect cost and demos, change from one process to the next, on one host too).

What must be equal: successes, steps, teacher steps, model calls, prompt and completion
tokens, and the cost at list price (cached prompt tokens priced as uncached); every
episode finished exactly once. The billed cost and cached-token counts must be equal too
when each worker ran the same episodes in the same order; otherwise they may differ,
because the in-process model's prompt prefix cache carries over from one episode to the
next in the same worker process (a warm worker bills the shared prompt header as cached),
and the output says so.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

SUBNET = "10.77.0"
SERVICE_IP = f"{SUBNET}.1"
BRIDGE = "nomh-br0"
HOSTS = {"host-a": (f"{SUBNET}.2", "nomh-a"), "host-b": (f"{SUBNET}.3", "nomh-b")}
LOCK = Path("/run/lock/nightowl-multihost.lock")


def log(msg: str) -> None:
    """Progress on stderr with a timestamp."""
    print(f"[multihost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str | Path, check: bool = True, quiet: bool = False,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[-2000:]}")
    if not quiet and r.returncode != 0:
        log(f"(ignored) {' '.join(map(str, cmd))}: {(r.stderr or r.stdout).strip()[:300]}")
    return r


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie reparented to a PID 1 that never reaps counts as gone
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# --- cleanup ---------------------------------------------------------------------------------
class Cleanup:
    """Undo actions, run once in reverse order (also on SIGTERM/SIGHUP/SIGINT).

    Every process started is also written to ``<work>/pids`` (``kind pid``) so that
    scripts/multihost-run.sh can still stop it when this process itself was SIGKILLed.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.actions: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, fn: Callable[[], None]) -> None:
        self.actions.append((what, fn))

    def record_pid(self, kind: str, pid: int) -> None:
        with (self.work / "pids").open("a") as fh:
            fh.write(f"{kind} {pid}\n")

    def run(self) -> None:
        while self.actions:
            what, fn = self.actions.pop()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                log(f"cleanup of {what} failed: {exc}")


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


# --- network ---------------------------------------------------------------------------------
def _netns_exists(name: str) -> bool:
    return name in sh("ip", "netns", "list", quiet=True).stdout.split()


def remove_network() -> None:
    """Delete our namespaces (killing what still runs in them), veths and bridge."""
    for ns, (_, veth) in HOSTS.items():
        if _netns_exists(ns):
            pids = sh("ip", "netns", "pids", ns, check=False, quiet=True).stdout.split()
            for p in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(p), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        if Path(f"/sys/class/net/{veth}0").exists():  # gone with its namespace, usually
            sh("ip", "link", "del", f"{veth}0", check=False, quiet=True)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        sh("ip", "link", "del", BRIDGE, check=False)


def _is_ours(ns: str) -> bool:
    veth = HOSTS[ns][1]
    return sh("ip", "-n", ns, "link", "show", f"{veth}1", check=False, quiet=True).returncode == 0


def setup_network(cleanup: Cleanup) -> None:
    """Bridge in the root namespace, one namespace per host joined by a veth pair."""
    for ns in HOSTS:
        if _netns_exists(ns) and not _is_ours(ns):
            raise SystemExit(f"network namespace {ns} exists and is not ours; remove it first")
    if any(_netns_exists(ns) for ns in HOSTS) or Path(f"/sys/class/net/{BRIDGE}").exists():
        log("removing a previous run's namespaces (killed before it could clean up)")
        remove_network()
    cleanup.add("network", remove_network)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{SERVICE_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for ns, (ip, veth) in HOSTS.items():
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{veth}0", "type", "veth", "peer", "name", f"{veth}1")
        sh("ip", "link", "set", f"{veth}1", "netns", ns)
        sh("ip", "link", "set", f"{veth}0", "master", BRIDGE)
        sh("ip", "link", "set", f"{veth}0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", f"{veth}1")
        sh("ip", "-n", ns, "link", "set", f"{veth}1", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")  # its own loopback (py4j needs one)
    log(f"network: {BRIDGE} {SERVICE_IP}/24; "
        + ", ".join(f"{ns} {ip}" for ns, (ip, _) in HOSTS.items()))


# --- services --------------------------------------------------------------------------------
def _pg_bin() -> Path:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
                    reverse=True):
        if all((d / x).exists() for x in ("initdb", "pg_ctl", "postgres", "psql")):
            return d
    initdb = shutil.which("initdb")
    if initdb:
        d = Path(initdb).resolve().parent
        if (d / "pg_ctl").exists():
            return d
    raise SystemExit("PostgreSQL not installed (bash scripts/with-services.sh true installs it)")


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _wait_port(ip: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {ip}:{port}")


@dataclass
class Services:
    """PostgreSQL and Redis in the root namespace, listening on the bridge address only."""

    pg_port: int
    redis_port: int
    psql: Path

    def pg_url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{SERVICE_IP}:{self.pg_port}/{database}"

    def redis_url(self, db: int) -> str:
        return f"redis://{SERVICE_IP}:{self.redis_port}/{db}"

    def create_database(self, name: str) -> None:
        sh(self.psql, "-h", SERVICE_IP, "-p", str(self.pg_port), "-U", "postgres", "-d",
           "postgres", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", f"CREATE DATABASE {name}")


def start_services(work: Path, cleanup: Cleanup) -> Services:
    """Our own PostgreSQL and Redis, on 10.77.0.1 and nowhere else."""
    pg_bin = _pg_bin()
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server not installed (scripts/with-services.sh installs it)")
    svc = work / "services"
    pg_data, redis_dir = svc / "pg", svc / "redis"
    pg_data.mkdir(parents=True)
    redis_dir.mkdir()
    if sh("id", "postgres", check=False, quiet=True).returncode != 0:
        sh("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres")
    shutil.chown(pg_data, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    r = sh(*as_pg, pg_bin / "initdb", "-D", pg_data, "-U", "postgres", "-A", "trust", "-E",
           "UTF8", "--locale=C.UTF-8", check=False, quiet=True)
    if r.returncode != 0:
        sh(*as_pg, pg_bin / "initdb", "-D", pg_data, "-U", "postgres", "-A", "trust", "-E",
           "UTF8", "--no-locale")
    pg_port = _free_port(SERVICE_IP)
    with (pg_data / "postgresql.conf").open("a") as fh:
        fh.write(f"listen_addresses = '{SERVICE_IP}'\nport = {pg_port}\n"
                 f"unix_socket_directories = '{pg_data}'\nmax_connections = 200\n"
                 "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                 "shared_buffers = 64MB\nlog_min_messages = warning\n")
    with (pg_data / "pg_hba.conf").open("a") as fh:
        fh.write(f"host all all {SUBNET}.0/24 trust\n")

    def stop_pg() -> None:
        pid_file = pg_data / "postmaster.pid"
        if pid_file.exists():
            sh(*as_pg, pg_bin / "pg_ctl", "-D", pg_data, "-m", "immediate", "-w", "-t", "30",
               "stop", check=False)

    cleanup.add("postgresql", stop_pg)
    sh(*as_pg, pg_bin / "pg_ctl", "-D", pg_data, "-l", pg_data / "server.log", "-w", "-t",
       "60", "start")
    with contextlib.suppress(OSError, ValueError):
        cleanup.record_pid("postgres", int((pg_data / "postmaster.pid").read_text().split()[0]))

    redis_port = _free_port(SERVICE_IP)
    proc = subprocess.Popen(
        [redis, "--bind", SERVICE_IP, "--port", str(redis_port), "--save", "", "--appendonly",
         "no", "--dir", str(redis_dir), "--protected-mode", "no", "--logfile",
         str(redis_dir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    cleanup.record_pid("redis-server", proc.pid)

    def stop_redis() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    cleanup.add("redis", stop_redis)
    _wait_port(SERVICE_IP, pg_port)
    _wait_port(SERVICE_IP, redis_port)
    log(f"PostgreSQL on {SERVICE_IP}:{pg_port}, Redis on {SERVICE_IP}:{redis_port}")
    return Services(pg_port, redis_port, pg_bin / "psql")


# --- hosts -------------------------------------------------------------------------------------
#: run inside a host's own UTS + mount namespace: its hostname, its folder at $SELF, and
#: empty tmpfs mounts over everything of the other hosts (and /tmp, the real ~/.cache)
_ISOLATE = r"""
set -e
hostname "$NOMH_HOST"
mount --bind "$NOMH_SRC" "$NOMH_SELF"
for d in $NOMH_HIDE; do [ -d "$d" ] && mount -t tmpfs -o size=256m tmpfs "$d"; done
cd "$NOMH_SELF"
exec "$@"
"""


@dataclass
class Host:
    """Where one of the roles runs: a network namespace (or the root one) and its folder."""

    name: str
    netns: str | None  # None: the root namespace
    folder: Path  # on this machine
    isolated: bool  # own UTS + mount namespace with its folder seen at <work>/self
    work: Path

    @property
    def seen_as(self) -> Path:
        """The folder's path as the host's processes see it."""
        return self.work / "self" if self.isolated else self.folder

    def env(self, db_url: str, broker: str) -> dict[str, str]:
        """The host's environment: only the database and the broker point anywhere shared."""
        root = self.seen_as
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NIGHTOWL_", "XDG_", "HF_", "TRANSFORMERS_", "PYTHON"))}
        env.update({
            "PATH": f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(root / "user"),
            "XDG_CACHE_HOME": str(root / "cache"),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_DATA_HOME": str(root / "data"),
            "TMPDIR": str(root / "tmp"),
            "NIGHTOWL_HOME": str(root / "nightowl"),
            "NIGHTOWL_DATABASE_URL": db_url,
            "NIGHTOWL_BROKER_URL": broker,
            "NIGHTOWL_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        })
        return env

    def prepare(self) -> None:
        for sub in ("user", "cache", "config", "data", "tmp", "nightowl"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    def argv(self, cmd: list[str]) -> list[str]:
        out: list[str] = []
        if self.netns:
            out += ["ip", "netns", "exec", self.netns]
        if self.isolated:
            out += ["unshare", "--uts", "--mount", "--propagation", "private",
                    "sh", "-c", _ISOLATE, "sh"]
        return out + cmd

    def isolation_env(self) -> dict[str, str]:
        if not self.isolated:
            return {}
        hide = [self.work / "hosts", self.work / "services", Path("/tmp")]
        real_cache = Path(os.path.expanduser("~")) / ".cache"
        hide.append(real_cache)
        return {"NOMH_HOST": self.name, "NOMH_SRC": str(self.folder),
                "NOMH_SELF": str(self.work / "self"),
                "NOMH_HIDE": " ".join(str(p) for p in hide)}

    def popen(self, cmd: list[str], env: dict[str, str], logfile: Path,
              cleanup: Cleanup) -> subprocess.Popen[bytes]:
        fh = logfile.open("ab")
        proc = subprocess.Popen(self.argv(cmd), env={**env, **self.isolation_env()},
                                cwd=self.folder if not self.isolated else "/",
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()
        cleanup.record_pid("nightowl", proc.pid)
        return proc

    def run(self, cmd: list[str], env: dict[str, str], logfile: Path, timeout: float,
            cleanup: Cleanup) -> tuple[int, str, float]:
        """Run to completion; (exit code, stdout, wall seconds). stderr goes to the log."""
        t0 = time.perf_counter()
        with logfile.open("ab") as err:
            proc = subprocess.Popen(self.argv(cmd), env={**env, **self.isolation_env()},
                                    cwd=self.folder if not self.isolated else "/",
                                    stdout=subprocess.PIPE, stderr=err,
                                    start_new_session=True)
            cleanup.record_pid("nightowl", proc.pid)
            try:
                raw, _ = proc.communicate(timeout=timeout)
            except BaseException:
                stop(proc)
                raise
        out = raw.decode(errors="replace")
        with logfile.open("a") as fh:
            fh.write(out)
        return proc.returncode, out, time.perf_counter() - t0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown of a worker's process group, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind, if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def probe_isolation(host: Host, services: Services, env: dict[str, str]) -> dict[str, Any]:
    """From inside the host: the services answer on 10.77.0.1 and not on 127.0.0.1; the
    other hosts' folders and the real ~/.cache are not visible."""
    code = (
        "import json, os, socket, sys\n"
        "def reach(ip, port):\n"
        "    try:\n"
        "        socket.create_connection((ip, port), timeout=2).close(); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "pg, rd, hosts, cache = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]\n"
        "print(json.dumps({'hostname': socket.gethostname(),\n"
        f"  'pg_on_{SERVICE_IP}': reach('{SERVICE_IP}', pg), 'redis_on_{SERVICE_IP}': "
        f"reach('{SERVICE_IP}', rd),\n"
        "  'pg_on_127.0.0.1': reach('127.0.0.1', pg),\n"
        "  'redis_on_127.0.0.1': reach('127.0.0.1', rd),\n"
        "  'other_hosts_visible': sorted(os.listdir(hosts)),\n"
        "  'real_cache_entries': sorted(os.listdir(cache)) if os.path.isdir(cache) else [],\n"
        "  'own_folder_entries': sorted(os.listdir('.'))}))\n"
    )
    r = subprocess.run(
        host.argv([sys.executable, "-c", code, str(services.pg_port), str(services.redis_port),
                   str(host.work / "hosts"), str(Path(os.path.expanduser("~")) / ".cache")]),
        env={**env, **host.isolation_env()}, capture_output=True, text=True, timeout=60,
        check=False, cwd="/",
    )
    if r.returncode != 0:
        raise RuntimeError(f"isolation probe in {host.name} failed: {r.stderr.strip()[-1000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- one phase -------------------------------------------------------------------------------
@dataclass
class Phase:
    """One complete distributed run: collect, workers, run --via celery --watch, results."""

    name: str
    database: str
    redis_db: int
    workers: list[Host]
    coordinator: Host
    timings: dict[str, float] = field(default_factory=dict)


def _json_line(out: str) -> dict[str, Any]:
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    text = out.strip()
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


def run_phase(phase: Phase, services: Services, args: argparse.Namespace, logs: Path,
              cleanup: Cleanup) -> dict[str, Any]:
    """Run one phase and return what it measured (results read back from PostgreSQL)."""
    log(f"--- phase {phase.name}: database {phase.database}, redis db {phase.redis_db}")
    services.create_database(phase.database)
    db_url, broker = services.pg_url(phase.database), services.redis_url(phase.redis_db)
    for h in [*phase.workers, phase.coordinator]:
        h.prepare()
    probes = {h.name: probe_isolation(h, services, h.env(db_url, broker))
              for h in [*phase.workers, phase.coordinator] if h.isolated}
    t_phase = time.perf_counter()
    procs: list[tuple[Host, subprocess.Popen[bytes], Path]] = []
    try:
        for i, h in enumerate(phase.workers):
            wlog = logs / f"{phase.name}-worker-{h.name}-{i}.log"
            cmd = ["nightowl", "worker", "--queues", "episodes", "--concurrency", "1",
                   "--loglevel", "INFO", "--name", f"w{i}@{h.name}"]
            procs.append((h, h.popen(cmd, h.env(db_url, broker), wlog, cleanup), wlog))
        for h, p, _ in procs:
            cleanup.add(f"worker on {h.name}", lambda p=p: stop(p))

        # the coordinator collects demos while the workers start
        c = phase.coordinator
        clog = logs / f"{phase.name}-coordinator.log"
        rc, out, wall = c.run(["nightowl", "collect", "--env", args.env, "--game", args.game,
                               "--tasks", str(args.collect_tasks), "--json"],
                              c.env(db_url, broker), clog, args.timeout, cleanup)
        if rc != 0:
            raise RuntimeError(f"collect failed ({rc}); see {clog}")
        collect = _json_line(out)
        phase.timings["collect_s"] = wall

        t0 = time.perf_counter()
        deadline = t0 + 180
        while not all(" ready." in wl.read_text(errors="replace") for _, _, wl in procs):
            for h, p, wl in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"worker on {h.name} exited {p.returncode}; see {wl}")
            if time.perf_counter() > deadline:
                raise RuntimeError("workers did not start in 180 s")
            time.sleep(0.5)
        phase.timings["workers_ready_after_collect_s"] = time.perf_counter() - t0

        run_cmd = ["nightowl", "run", "--env", args.env, "--game", args.game, "--split",
                   args.split, "--tasks", str(args.tasks), "--ladder", args.ladder,
                   "--max-steps", str(args.max_steps), "--no-store-escalations",
                   "--via", "celery", "--watch", "--json"]
        rc, out, wall = c.run(run_cmd, c.env(db_url, broker), clog, args.timeout, cleanup)
        phase.timings["run_s"] = wall
        started = _json_line(out)
        if rc != 0 or "run_id" not in started:
            raise RuntimeError(f"run --via celery --watch failed ({rc}); see {clog}")
    finally:
        for _, p, _ in procs:
            stop(p)
    phase.timings["phase_s"] = time.perf_counter() - t_phase
    res = read_results(db_url, started["run_id"], collect.get("run_id"))
    res.update({
        "phase": phase.name,
        "workers": [{"host": h.name, "netns": h.netns or "(root)",
                     "folder_seen_as": str(h.seen_as)} for h in phase.workers],
        "coordinator": {"host": phase.coordinator.name,
                        "netns": phase.coordinator.netns or "(root)"},
        "database_url": db_url, "broker_url": broker,
        "collect": {k: collect.get(k) for k in ("run_id", "episodes", "successes",
                                                "demos_added", "collection_cost")},
        "timings_s": phase.timings,
        "isolation_probes": probes,
        "folders": {h.name: folder_evidence(h.folder)
                    for h in {h.folder: h for h in [*phase.workers, phase.coordinator]}.values()},
        "worker_log_lines": {wl.name: worker_lines(wl) for _, _, wl in procs},
    })
    return res


def worker_lines(logfile: Path) -> list[str]:
    """The telling lines of a worker's log: index rebuilds, task times, re-queues, errors."""
    keep = ("rebuilt from SQL", "succeeded in", "re-queued", "refused", "ERROR", "ready.")
    out = []
    for line in logfile.read_text(errors="replace").splitlines():
        if any(k in line for k in keep):
            out.append(line[:200])
    return out[:40]


def folder_evidence(folder: Path) -> dict[str, Any]:
    """What a host wrote into its own folder (sizes in MB, a few paths)."""
    def size(p: Path) -> float:
        return round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6, 1)

    home = folder / "nightowl"
    models = folder / "cache" / "nightowl" / "models"
    return {
        "nightowl_home_entries": sorted(p.name for p in home.iterdir()) if home.exists() else [],
        "sqlite_files_in_home": sorted(p.name for p in home.rglob("*.sqlite*"))
        + sorted(p.name for p in home.rglob("*.db")),
        "index_files": sorted(str(p.relative_to(home)) for p in (home / "indexes").rglob("*")
                              if p.is_file())[:12] if (home / "indexes").exists() else [],
        "model_cache": sorted(p.name for p in models.iterdir()) if models.exists() else [],
        "model_cache_mb": size(models) if models.exists() else 0.0,
    }


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Any]:
    """The model registry with the shipped prices (what the hosts, given no toml, use)."""
    from nightowl.config import _default_models

    return dict(_default_models())


def _cache_discount(model: str, cached_tokens: int) -> float:
    """What the cached prompt tokens of a call saved (billed at the input price instead)."""
    if not cached_tokens:
        return 0.0
    spec = _registry().get(model)
    if spec is None:
        raise RuntimeError(f"no registry prices for {model!r} (cached tokens {cached_tokens})")
    return cached_tokens * (spec.prices.input - spec.prices.cached_input) / 1_000_000


def read_results(db_url: str, run_id: str, collect_run_id: str | None) -> dict[str, Any]:
    """Per-task outcome, tokens and cost of the run, and its leases, from PostgreSQL."""
    from sqlalchemy import select

    from nightowl.ledger.leases import LeaseStore
    from nightowl.ledger.tables import Episode, ModelCall, ToolCall
    from nightowl.storage import open_db

    db = open_db(url=db_url)
    with db.sessions() as s:
        eps = list(s.scalars(select(Episode).where(Episode.run_id == run_id)))
        calls = list(s.scalars(select(ModelCall).where(ModelCall.run_id == run_id)))
        tools = list(s.scalars(select(ToolCall).where(ToolCall.run_id == run_id)))
        collect_cost = None
        if collect_run_id:
            collect_cost = sum(c.cost_usd for c in s.scalars(
                select(ModelCall).where(ModelCall.run_id == collect_run_id))) + sum(
                t.cost_usd for t in s.scalars(
                    select(ToolCall).where(ToolCall.run_id == collect_run_id)))
    leases = {r.task_id: r for r in LeaseStore(db).for_run(run_id)}
    db.engine.dispose()

    by_ep: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    list_total = 0.0
    for c in calls:
        d = by_ep[c.episode_id or "-"]
        d["model_calls"] += 1
        d[f"calls_{c.role}"] += 1
        d["prompt_tokens"] += c.prompt_tokens
        d["cached_prompt_tokens"] += c.cached_prompt_tokens
        d["completion_tokens"] += c.completion_tokens
        d["model_cost"] += c.cost_usd
        d["list_cost"] += c.cost_usd + _cache_discount(c.model, c.cached_prompt_tokens)
        list_total += c.cost_usd + _cache_discount(c.model, c.cached_prompt_tokens)
    billed = Counter((c.episode_id, c.step, c.role, c.kind) for c in calls)
    for t in tools:
        d = by_ep[t.episode_id or "-"]
        d["tool_cost"] += t.cost_usd
        d["list_cost"] += t.cost_usd
        list_total += t.cost_usd
        if t.tool.startswith("env:") and (t.meta or {}).get("actor") in ("teacher", "oracle"):
            d["teacher_steps"] += 1
    rows_per_task = Counter(e.task_id for e in eps)
    tasks: dict[str, dict[str, Any]] = {}
    for e in sorted(eps, key=lambda e: e.task_id):
        d = by_ep.get(e.id, {})
        lease = leases.get(e.task_id)
        tasks[e.task_id] = {
            "episode_rows": rows_per_task[e.task_id],
            "status": e.status, "success": e.success, "steps": e.n_steps, "reason": e.reason,
            "teacher_steps": int(d.get("teacher_steps", 0)),
            "model_calls": int(d.get("model_calls", 0)),
            "prompt_tokens": int(d.get("prompt_tokens", 0)),
            "cached_prompt_tokens": int(d.get("cached_prompt_tokens", 0)),
            "completion_tokens": int(d.get("completion_tokens", 0)),
            "cost_usd": float(d.get("model_cost", 0.0)) + float(d.get("tool_cost", 0.0)),
            "list_cost_usd": float(d.get("list_cost", 0.0)),
            "lease_state": lease.state if lease else None,
            "attempts": lease.attempt if lease else None,
            "requeues": lease.requeues if lease else None,
            "host": lease.host if lease else None,
            "worker": f"{lease.host}:{lease.pid}" if lease else None,
            "started_at": lease.started_at.isoformat() if lease and lease.started_at else None,
        }
    # the order each worker process ran its episodes in (its prompt prefix cache carries
    # over from one episode to the next, so it decides the cached-token billing)
    seqs: dict[str, list[str]] = defaultdict(list)
    for task, t in sorted(tasks.items(), key=lambda kv: kv[1]["started_at"] or ""):
        seqs[str(t["worker"])].append(task)
    for seq in seqs.values():
        for i, task in enumerate(seq):
            tasks[task]["nth_on_worker"] = i
    total = sum(c.cost_usd for c in calls) + sum(t.cost_usd for t in tools)
    return {
        "run_id": run_id,
        "episodes": len(eps),
        "tasks_seen": len(rows_per_task),
        "finished_exactly_once": all(n == 1 for n in rows_per_task.values())
        and all(t["status"] != "running" and t["lease_state"] == "done" for t in tasks.values()),
        "successes": sum(bool(e.success) for e in eps),
        "total_cost_usd": total,
        "total_list_cost_usd": list_total,
        "schedule": sorted(seqs.values()),
        "collect_cost_usd": collect_cost,
        "calls_billed_twice": sum(1 for n in billed.values() if n > 1),
        "hosts": dict(Counter(t["host"] for t in tasks.values())),
        "episodes_per_worker": dict(Counter(t["worker"] for t in tasks.values())),
        "tasks": tasks,
    }


# --- compare ---------------------------------------------------------------------------------
#: decided by the episode alone: must be equal on one host and on several
DECISIONS = ("success", "steps", "teacher_steps", "model_calls", "prompt_tokens",
             "completion_tokens", "list_cost_usd")
#: also depend on which episode the same worker process ran before (its prompt prefix
#: cache): equal when the schedule is, else reported as a scheduling effect
BILLING = ("cached_prompt_tokens", "cost_usd")


def _same(va: Any, vb: Any) -> bool:
    if isinstance(va, float) and isinstance(vb, float):
        return abs(va - vb) < 1e-12
    return bool(va == vb)


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per task and in total: what differs between the two phases, and whether it may."""
    decisions: list[dict[str, Any]] = []
    billing: list[dict[str, Any]] = []
    for task in sorted(set(a["tasks"]) | set(b["tasks"])):
        ta, tb = a["tasks"].get(task, {}), b["tasks"].get(task, {})
        for keys, out in ((DECISIONS, decisions), (BILLING, billing)):
            for key in keys:
                if not _same(ta.get(key), tb.get(key)):
                    out.append({"task": task, "field": key, "multihost": ta.get(key),
                                "single_host": tb.get(key)})
    cost_diff = a["total_cost_usd"] - b["total_cost_usd"]
    same_schedule = a["schedule"] == b["schedule"]
    same_costs = abs(cost_diff) < 1e-12 and not billing
    return {
        "same_tasks": sorted(a["tasks"]) == sorted(b["tasks"]),
        "same_successes": [a["tasks"][t]["success"] for t in sorted(a["tasks"])]
        == [b["tasks"].get(t, {}).get("success") for t in sorted(a["tasks"])],
        "both_finished_exactly_once": a["finished_exactly_once"] and b["finished_exactly_once"],
        "same_decisions": not decisions,
        "total_cost_diff_usd": cost_diff,
        "total_list_cost_diff_usd": a["total_list_cost_usd"] - b["total_list_cost_usd"],
        "collect_cost_diff_usd": (a["collect_cost_usd"] or 0) - (b["collect_cost_usd"] or 0),
        "same_costs": same_costs,
        "same_schedule": same_schedule,
        #: billed costs may differ only when the workers ran the episodes in another order
        "costs_explained": same_costs or (not same_schedule and not decisions),
        "differences": decisions,
        "billing_differences": billing,
    }


def print_table(res: dict[str, Any]) -> None:
    """The comparison as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    a, b = res["phases"]["multihost"], res["phases"]["single_host"]
    m = res["machine"]
    t = Table(title=f"multihost vs single host ({m['cpu']}, {m['cores']} cores, load "
                    f"{m['load_before'][0]:.1f} -> {m['load_after'][0]:.1f})")
    for col in ("phase", "episodes", "once", "success", "total cost", "collect cost",
                "host:pid (episodes)", "collect s", "run s", "phase s"):
        t.add_column(col, justify="right")
    for name, r in (("multihost", a), ("single host", b)):
        t.add_row(name, str(r["episodes"]), "yes" if r["finished_exactly_once"] else "NO",
                  f"{r['successes']}/{r['episodes']}", f"${r['total_cost_usd']:.6f}",
                  f"${(r['collect_cost_usd'] or 0):.6f}",
                  ", ".join(f"{h}: {n}" for h, n in sorted(r["episodes_per_worker"].items())),
                  f"{r['timings_s'].get('collect_s', 0):.0f}",
                  f"{r['timings_s'].get('run_s', 0):.0f}",
                  f"{r['timings_s'].get('phase_s', 0):.0f}")
    con.print(t)
    pt = Table(title="per task: multihost | single host")
    for col in ("task", "success", "steps", "teacher steps", "prompt tok", "cached tok",
                "completion tok", "cost", "worker"):
        pt.add_column(col, justify="right")
    for task in sorted(a["tasks"]):
        x, y = a["tasks"][task], b["tasks"].get(task, {})

        def both(k: str, fmt: str = "{}", x: dict = x, y: dict = y) -> str:
            return f"{fmt.format(x.get(k))} | {fmt.format(y.get(k))}"

        pt.add_row(task, both("success"), both("steps"), both("teacher_steps"),
                   both("prompt_tokens"), both("cached_prompt_tokens"),
                   both("completion_tokens"), both("cost_usd", "${:.6f}"), both("worker"))
    con.print(pt)
    c = res["comparison"]
    con.print(f"same successes: {c['same_successes']}; every episode finished exactly once "
              f"(both): {c['both_finished_exactly_once']}; same decisions and tokens: "
              f"{c['same_decisions']}")
    con.print(f"total cost ${a['total_cost_usd']:.9f} vs ${b['total_cost_usd']:.9f} (diff "
              f"${c['total_cost_diff_usd']:+.9f}); at list price (cached tokens at the input "
              f"price) diff ${c['total_list_cost_diff_usd']:+.9f}; collect cost diff "
              f"${c['collect_cost_diff_usd']:+.9f}; same costs: {c['same_costs']}")
    con.print(f"episodes per worker, in order: {a['schedule']} vs {b['schedule']} "
              f"(same: {c['same_schedule']})")
    for d in c["differences"]:
        con.print(f"  differs: {d['task']} {d['field']}: {d['multihost']} vs {d['single_host']}")
    for d in c["billing_differences"]:
        con.print(f"  billed differently: {d['task']} {d['field']}: {d['multihost']} vs "
                  f"{d['single_host']}" + ("" if c["same_schedule"] else
                                           " (another episode ran before it on its worker)"))
    con.print(f"MATCH: {res['match']}  (wall {res['wall_s']:.0f} s)")


# --- main --------------------------------------------------------------------------------------
@contextlib.contextmanager
def exclusive_lock() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another multihost run holds {LOCK}") from None
        yield


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="an empty folder for everything (default: a new temp dir)")
    ap.add_argument("--env", default="twx")
    ap.add_argument("--game", default="peckingorder")
    ap.add_argument("--collect-tasks", type=int, default=4)
    ap.add_argument("--split", default="test")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--ladder", default="cascade")
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per command")
    ap.add_argument("--phases", default="multihost,single_host")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "multihost.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, homes)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces, mounts, a PostgreSQL run as postgres")
    if shutil.which("ip") is None or sh("ip", "netns", "list", check=False,
                                         quiet=True).returncode != 0:
        raise SystemExit("`ip netns` is not available")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _raise_exit)

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    own_work = not args.work
    work = Path(args.work or tempfile.mkdtemp(prefix="nightowl-multihost.", dir="/var/tmp"))
    if work.resolve().is_relative_to("/tmp"):
        raise SystemExit("--work must not be under /tmp (each host gets its own empty /tmp)")
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    (work / "self").mkdir(exist_ok=True)
    (work / "hosts").mkdir(exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    cleanup = Cleanup(work)
    if own_work and not args.keep:
        cleanup.add("work folder", lambda: shutil.rmtree(work, ignore_errors=True))
    phases: dict[str, dict[str, Any]] = {}
    error: str | None = None
    with exclusive_lock():
        try:
            setup_network(cleanup)
            services = start_services(work, cleanup)
            hosts = work / "hosts"
            if "multihost" in args.phases:
                multi = Phase(
                    "multihost", "nightowl_multihost", 0,
                    workers=[Host(ns, ns, hosts / ns, True, work) for ns in HOSTS],
                    coordinator=Host("coordinator", None, hosts / "coordinator", True, work))
                phases["multihost"] = run_phase(multi, services, args, logs, cleanup)
            if "single_host" in args.phases:
                shared = hosts / "single"
                single = Phase(
                    "single_host", "nightowl_single_host", 1,
                    workers=[Host("root", None, shared, False, work) for _ in HOSTS],
                    coordinator=Host("root", None, shared, False, work))
                phases["single_host"] = run_phase(single, services, args, logs, cleanup)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log(f"FAILED: {error}")
            for f in sorted(logs.glob("*.log")):
                tail = f.read_text(errors="replace").splitlines()[-15:]
                log(f"--- {f.name} (last lines)\n" + "\n".join(tail))
            if not isinstance(exc, Exception):
                raise  # a signal or an exit: clean up (finally) and go
        finally:
            cleanup.run()
    if args.keep:
        log(f"work folder kept: {work}")
    if error or len(phases) < 2:
        if error:
            print(f"multihost: FAILED: {error}", file=sys.stderr)
            return 1
        print(json.dumps(phases, indent=1, default=str))
        return 0
    comparison = compare(phases["multihost"], phases["single_host"])
    res = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "load_before": load_before,
                    "load_after": os.getloadavg(), "kernel": platform.release()},
        "args": {k: v for k, v in vars(args).items() if k not in ("work",)},
        "network": {"bridge": f"{BRIDGE} {SERVICE_IP}/24",
                    "hosts": {ns: ip for ns, (ip, _) in HOSTS.items()}},
        "phases": phases,
        "comparison": comparison,
        "match": comparison["same_tasks"] and comparison["same_successes"]
        and comparison["both_finished_exactly_once"] and comparison["same_decisions"]
        and abs(comparison["total_list_cost_diff_usd"]) < 1e-12
        and comparison["costs_explained"],
        "wall_s": time.perf_counter() - t_start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    print_table(res)
    log(f"wrote {args.out}")
    return 0 if res["match"] else 3


if __name__ == "__main__":
    sys.exit(main())
