"""`nightowl info`: where data, models and caches live, and what answers from here.

Read-only: it never creates a database or a folder. Reachability probes are short
(``timeout_s`` each, run in parallel) so the command answers in about a second even
when every server is down.
"""

from __future__ import annotations

import importlib.metadata
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from nightowl.config import Settings, find_config, user_home

HomeSource = Literal["NIGHTOWL_HOME", "nightowl.toml", "per-user default"]


class Place(BaseModel):
    """One folder or file and whether it exists yet."""

    path: str
    exists: bool


class Endpoint(BaseModel):
    """A server nightowl talks to, and whether it answered."""

    name: str
    url: str
    reachable: bool | None = Field(
        None, description="true/false when probed; null when not probed"
    )
    detail: str = ""


class ModelInfo(BaseModel):
    """One model-registry entry: its backend and where its weights or server are."""

    name: str
    backend: str
    where: str
    reachable: bool | None = None
    detail: str = ""


class Info(BaseModel):
    """Everything `nightowl info` reports (``--json`` prints this model)."""

    version: str
    config_file: str | None = Field(description="the project's nightowl.toml, if any")
    home: Place
    home_source: HomeSource
    user_home: str = Field(description="the per-user default home on this machine")
    cache_dir: Place
    model_cache: str | None = Field(description="converted GGUF weights (NIGHTOWL_MODEL_CACHE)")
    dtype: str = Field(description='what dtype "auto" picks on this machine')
    dtype_reason: str
    database: Endpoint
    broker: Endpoint
    models: list[ModelInfo]


def _place(path: Path) -> Place:
    return Place(path=str(path), exists=path.exists())


def _home_source(config: Path | None) -> HomeSource:
    if os.environ.get("NIGHTOWL_HOME"):
        return "NIGHTOWL_HOME"
    if config is not None and config.is_file():
        return "nightowl.toml"
    return "per-user default"


def _probe_database(url: str, timeout_s: float, probe: bool) -> Endpoint:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from nightowl.storage import one_line, redact_url

    endpoint = partial(Endpoint, name="database", url=redact_url(url))
    if not probe:
        return endpoint(detail="not probed")
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return endpoint(reachable=False, detail=one_line(exc))
    if parsed.get_backend_name() == "sqlite":
        db_file = parsed.database
        if not db_file or db_file == ":memory:":
            return endpoint(reachable=True, detail="in memory")
        if not Path(db_file).is_file():
            return endpoint(detail="not created yet (the first command that records "
                            "something creates it)")
    pg = parsed.get_backend_name() == "postgresql"
    args = {"connect_timeout": max(1, round(timeout_s))} if pg else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return endpoint(reachable=True)
    except Exception as exc:  # noqa: BLE001
        return endpoint(reachable=False, detail=one_line(exc))
    finally:
        engine.dispose()


def _probe_broker(url: str | None, timeout_s: float, probe: bool) -> Endpoint:
    if not url:
        return Endpoint(name="broker", url="(none)", detail="in-process (no broker configured)")
    from nightowl.storage import redact_url

    endpoint = partial(Endpoint, name="broker", url=redact_url(url))
    if not probe:
        return endpoint(detail="not probed")
    if not url.startswith(("redis://", "rediss://")):
        return endpoint(detail="not probed (not Redis)")
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        client.ping()
        client.close()
        return endpoint(reachable=True)
    except Exception as exc:  # noqa: BLE001
        return endpoint(reachable=False, detail=str(exc).split("\n")[0])


def _model_info(name: str, settings: Settings, timeout_s: float, probe: bool) -> ModelInfo:
    spec = settings.models[name]
    params = spec.params
    info = partial(ModelInfo, name=name, backend=spec.backend)
    if spec.backend == "transformers":
        from nightowl.errors import NightowlError
        from nightowl.llm.hf_weights import resolve_weights

        try:
            directory, gguf = resolve_weights(params)
        except NightowlError as exc:
            return info(where="?", reachable=False, detail=str(exc))
        where = str(Path(directory) / gguf) if gguf else directory
        return info(where=where, reachable=True, detail="weights found")
    if spec.backend == "openai":
        base = str(params.get("base_url", "")).rstrip("/")
        if not probe or not base:
            return info(where=base)
        import httpx

        try:
            resp = httpx.get(f"{base}/models", timeout=timeout_s)
            # 401/403: the server is there but wants a key; still reachable.
            ok = resp.status_code < 500
            return info(where=base, reachable=ok, detail=f"HTTP {resp.status_code}")
        except httpx.HTTPError as exc:
            return info(where=base, reachable=False, detail=type(exc).__name__)
    return info(where=str(params.get("model", "")))


def gather_info(settings: Settings, *, probe: bool = True, timeout_s: float = 1.0) -> Info:
    """Collect the report; with ``probe`` the database, broker and model servers are tried.

    Args:
        settings: the loaded settings.
        probe: try to reach the database, broker and HTTP model servers.
        timeout_s: the longest each probe waits.
    """
    from nightowl.llm.dtype import resolve_dtype
    from nightowl.llm.hf_weights import model_cache_root

    config = find_config()
    dtype, reason = resolve_dtype("auto")
    cache = model_cache_root()
    with ThreadPoolExecutor(max_workers=8) as pool:
        db_f = pool.submit(_probe_database, settings.resolved_database_url, timeout_s, probe)
        broker_f = pool.submit(_probe_broker, settings.broker_url, timeout_s, probe)
        model_fs = [
            pool.submit(_model_info, name, settings, timeout_s, probe)
            for name in sorted(settings.models)
        ]
        database, broker = db_f.result(), broker_f.result()
        models = [f.result() for f in model_fs]
    return Info(
        version=importlib.metadata.version("nightowl"),  # installed: `import nightowl` needs it
        config_file=str(config) if config is not None and config.is_file() else None,
        home=_place(settings.home),
        home_source=_home_source(config),
        user_home=str(user_home()),
        cache_dir=_place(settings.resolved_cache_dir),
        model_cache=str(cache) if cache is not None else None,
        dtype=dtype,
        dtype_reason=reason,
        database=database,
        broker=broker,
        models=models,
    )
