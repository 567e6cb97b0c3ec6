"""`nightowl worker`: start a Celery worker for sleep-time jobs (and the other queues)."""

from __future__ import annotations

import typer

from nightowl.errors import ConfigError


def worker(
    queues: str = typer.Option(
        "sleep,demos,index,episodes", "--queues", "-Q", help="comma-separated queues to consume"
    ),
    beat: bool = typer.Option(False, "--beat", "-B", help="also run the scan schedule (beat)"),
    concurrency: int = typer.Option(
        1, "--concurrency", "-c", min=1, max=256, help="worker processes"
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
    name: str = typer.Option("", "--name", "-n", help="worker node name (default celery@host)"),
) -> None:
    """Run a Celery worker on the configured broker (NIGHTOWL_BROKER_URL, Redis).

    Without a broker there is nothing to consume: `nightowl sleep run` runs the same
    jobs in-process instead.
    """
    from nightowl.config import get_settings

    settings = get_settings()
    if not settings.broker_url:
        raise ConfigError(
            "no broker configured: set NIGHTOWL_BROKER_URL=redis://HOST:6379/0 "
            "(or run `nightowl sleep run` to run sleep-time jobs in-process)"
        )
    from nightowl.workers.app import QUEUES, app

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if unknown:
        raise ConfigError(f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}")
    argv = ["worker", "-Q", ",".join(wanted), "-c", str(concurrency), "-l", loglevel]
    argv += ["--without-gossip", "--without-mingle"]
    if name:
        argv += ["-n", name]
    if beat:
        settings.home.mkdir(parents=True, exist_ok=True)
        argv += ["-B", "--schedule", str(settings.home / "celerybeat-schedule")]
    app.worker_main(argv=argv)
