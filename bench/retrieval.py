"""Demo-memory retrieval benchmark: latency p50/p99 at 10k and 100k stored steps.

What is measured (all on SQLite in a temp folder, faiss/torch on NIGHTOWL_THREADS
threads, default 1):

* Large stores (10k and 100k demo steps; ~10 steps per episode) are filled through the
  real `DemoMemory.add_episode` API with synthetic TextWorld-like goals and
  observations, embedded by the *hashing fake* (`HashingEmbedder`, 384 dims, no model):
  embedding 200k texts with MiniLM would take ~20 minutes on this 2-core machine.
  FAISS, SQL, windowing and de-duplication therefore run on real 384-dim vectors and
  real rows; only the vectors' semantics are fake.
* ``retrieve (excl. embedding)``: `retrieve(..., query_vectors=...)` with precomputed
  query vectors: goal search + exact in-episode step scoring + SQL fetch of the windows +
  de-duplication. This is the per-step runtime overhead of retrieval excluding model time.
* ``query embedding (MiniLM)``: the real all-MiniLM-L6-v2 (bf16, CPU) embedding the
  three query texts (goal, observation, goal+history) in one batch, per query.
* ``retrieve (incl. embedding)``: per query, the sum of the two above measured back to
  back (the model's query vectors are not used for the search, the fake's are).
* A small store (``--real-steps``, default 2000) is embedded end to end with MiniLM: real
  ingest throughput and real end-to-end retrieval latency.
* Build: ingest time (SQL + fake embedding + incremental FAISS adds), `rebuild()` from
  SQL (no model), reopen (load + verify against SQL), and FAISS-only build of the step
  index (Flat vs HNSW M=32), plus HNSW recall@10 vs exact on the global observation key.

Run: ``python bench/retrieval.py`` (writes bench/results/retrieval.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
THREADS = int(os.environ.get("NIGHTOWL_THREADS", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from nightowl.ledger import Episode, Ledger  # noqa: E402
from nightowl.memory import (  # noqa: E402
    DemoMemory,
    EpisodeDemo,
    HashingEmbedder,
    MemorySettings,
    SentenceTransformerEmbedder,
    StepRecord,
)
from nightowl.memory.index import VectorIndex  # noqa: E402
from nightowl.storage import open_db  # noqa: E402

ROOMS = [
    "kitchen",
    "pantry",
    "backyard",
    "garden",
    "corridor",
    "bedroom",
    "bathroom",
    "living room",
    "cellar",
    "attic",
    "shed",
    "street",
    "supermarket",
    "driveway",
]
ADJ = [
    "red",
    "yellow",
    "green",
    "purple",
    "white",
    "black",
    "orange",
    "sliced",
    "raw",
    "old",
    "shiny",
    "wooden",
    "metal",
    "small",
    "large",
]
FOOD = [
    "potato",
    "carrot",
    "apple",
    "onion",
    "pepper",
    "tomato",
    "chicken wing",
    "pork chop",
    "banana",
    "lettuce",
    "block of cheese",
    "egg",
    "parsley",
    "flour",
]
THINGS = [
    "coin",
    "key",
    "lamp",
    "book",
    "chest",
    "box",
    "knife",
    "toolbox",
    "cookbook",
    "fridge",
    "oven",
    "stove",
    "counter",
    "table",
    "sofa",
    "bed",
    "shelf",
    "door",
]
VERBS_GOAL = [
    "cook a meal with the {a} {f} and the {a2} {f2}",
    "find the {a} {t} and take it",
    "put the {a} {f} in the {t}",
    "unlock the {t} with the {a} key and open it",
    "slice the {a} {f}, fry it and eat the meal",
    "collect the {a} {t} hidden in the {r}",
    "bring the {a} {f} to the {r}",
]
ACTIONS = [
    "go north",
    "go south",
    "go east",
    "go west",
    "open {t}",
    "take {a} {f}",
    "take {t}",
    "slice {a} {f} with knife",
    "cook {a} {f} with stove",
    "look",
    "examine {t}",
    "put {a} {f} in {t}",
    "unlock {t} with key",
    "prepare meal",
    "eat meal",
    "inventory",
    "close {t}",
    "drop {a} {f}",
]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        a=rng.choice(ADJ),
        a2=rng.choice(ADJ),
        f=rng.choice(FOOD),
        f2=rng.choice(FOOD),
        t=rng.choice(THINGS),
        r=rng.choice(ROOMS),
    )


def _observation(rng: random.Random) -> str:
    room = rng.choice(ROOMS)
    items = ", ".join(
        f"a {rng.choice(ADJ)} {rng.choice(FOOD + THINGS)}" for _ in range(rng.randint(2, 5))
    )
    exits = " and ".join(rng.sample(["north", "south", "east", "west"], rng.randint(1, 3)))
    extra = rng.choice(
        [
            "",
            " The room smells of spices.",
            " It is rather dark here.",
            " You hear a faint ticking.",
            " A cookbook lies open on the table.",
        ]
    )
    return (
        f"-= {room.title()} =- You are in the {room}. You see {items}.{extra} Exits lead {exits}."
    )


def episode(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    goal = _fill(rng, rng.choice(VERBS_GOAL))
    n = rng.randint(6, 14)
    return goal, [(_observation(rng), _fill(rng, rng.choice(ACTIONS))) for _ in range(n)]


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def lat(xs: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in xs]
    return {
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "n": len(ms),
    }


def build_store(
    root: Path,
    n_steps: int,
    embedder: Any,
    seed: int,
    settings: MemorySettings,
    progress: Console,
    batch: int = 100,
) -> tuple[DemoMemory, Any, list[tuple[str, list[tuple[str, str]]]], dict[str, Any]]:
    """Fill a store through `DemoMemory.add_episodes` (``batch`` episodes per call).

    Episode rows are bulk-inserted into the ledger's ``episodes`` table (one
    `Ledger.start_episode` transaction per episode would dominate the build time).
    """
    db = open_db(url=f"sqlite:///{root / 'bench.db'}")
    led = Ledger(db)
    run = led.start_run("bench-retrieval", "collect", {"n_steps": n_steps})
    mem = DemoMemory(db, embedder, root / "indexes", settings)
    rng = random.Random(seed)
    episodes: list[tuple[str, list[tuple[str, str]]]] = []
    total = 0
    t0 = time.perf_counter()
    last = t0
    pending: list[EpisodeDemo] = []

    def push() -> None:
        if not pending:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "id": d.episode_id,
                "run_id": run,
                "task_id": d.task_id or "",
                "env": "synthetic",
                "split": "train",
                "status": "done",
                "success": True,
                "n_steps": len(d.steps),
                "started_at": now,
            }
            for d in pending
        ]
        db.write(lambda s: s.execute(insert(Episode), rows))
        mem.add_episodes(pending)
        pending.clear()

    while total < n_steps:
        goal, pairs = episode(rng)
        pairs = pairs[: n_steps - total]
        pending.append(
            EpisodeDemo(
                episode_id=uuid.uuid4().hex,
                goal=goal,
                task_id=f"task-{len(episodes)}",
                steps=[
                    StepRecord(idx=i, observation=o, action=a) for i, (o, a) in enumerate(pairs)
                ],
            )
        )
        episodes.append((goal, pairs))
        total += len(pairs)
        if len(pending) >= batch:
            push()
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            progress.log(f"  ingest {total}/{n_steps} steps ({total / (last - t0):.0f} steps/s)")
    push()
    mem.flush()
    ingest_s = time.perf_counter() - t0
    return (
        mem,
        db,
        episodes,
        {
            "ingest_s": round(ingest_s, 2),
            "steps": total,
            "episodes": len(episodes),
            "ingest_batch_episodes": batch,
            "ingest_steps_per_s": round(total / ingest_s, 1),
        },
    )


def single_adds(mem: DemoMemory, db: Any, n: int, seed: int) -> dict[str, Any]:
    """Per-episode `add_episode` latency (one transaction each) on the filled store."""
    led = Ledger(db)
    run = led.start_run("bench-single-adds", "collect", {})
    rng = random.Random(seed)
    ts = []
    steps = 0
    for i in range(n):
        goal, pairs = episode(rng)
        ep = led.start_episode(run, f"single-{i}", "synthetic", "train")
        t = time.perf_counter()
        mem.add_episode(
            ep, goal, [StepRecord(idx=j, observation=o, action=a) for j, (o, a) in enumerate(pairs)]
        )
        ts.append(time.perf_counter() - t)
        steps += len(pairs)
    return {
        "add_episode": lat(ts),
        "mean_steps": round(steps / n, 1),
        "per_step_ms": round(sum(ts) / steps * 1000, 3),
    }


def queries(
    rng: random.Random, episodes: list[tuple[str, list[tuple[str, str]]]], n: int
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    out = []
    for _ in range(n):
        goal, pairs = rng.choice(episodes)
        # a held-out-like query: same kind of task, a fresh observation in a similar room
        qgoal = goal if rng.random() < 0.3 else _fill(rng, rng.choice(VERBS_GOAL))
        i = rng.randrange(len(pairs))
        obs = pairs[i][0] if rng.random() < 0.5 else _observation(rng)
        out.append((qgoal, obs, [(o, a) for o, a in pairs[max(0, i - 3) : i]]))
    return out


def measure_retrieval(
    mem: DemoMemory, qs: list[Any], minilm: SentenceTransformerEmbedder | None, k: dict[str, int]
) -> dict[str, Any]:
    qv = [mem.embed_query(g, o, h) for g, o, h in qs]
    for (g, o, h), v in list(zip(qs, qv, strict=False))[:10]:  # warm-up
        mem.retrieve(g, o, h, query_vectors=v, **k)
    excl: list[float] = []
    n_windows: list[int] = []
    n_steps: list[int] = []
    for (g, o, h), v in zip(qs, qv, strict=False):
        t = time.perf_counter()
        wins = mem.retrieve(g, o, h, query_vectors=v, **k)
        excl.append(time.perf_counter() - t)
        n_windows.append(len(wins))
        n_steps.append(sum(len(w.steps) for w in wins))
    out: dict[str, Any] = {
        "retrieve_excl_embedding": lat(excl),
        "windows_per_query": round(statistics.fmean(n_windows), 2),
        "steps_per_query": round(statistics.fmean(n_steps), 2),
    }
    if minilm is not None:
        emb: list[float] = []
        incl: list[float] = []
        for (g, o, h), v in zip(qs, qv, strict=False):
            t = time.perf_counter()
            minilm.embed([g, o, mem.hist_text(g, [a for _, a in h])])
            t1 = time.perf_counter()
            mem.retrieve(g, o, h, query_vectors=v, **k)
            t2 = time.perf_counter()
            emb.append(t1 - t)
            incl.append(t2 - t)
        out["query_embedding_minilm"] = lat(emb)
        out["retrieve_incl_embedding"] = lat(incl)
    return out


def faiss_build(mem: DemoMemory, dim: int) -> dict[str, Any]:
    """FAISS-only build of the observation key: Flat vs HNSW, and HNSW recall@10."""
    ids = np.asarray(sorted(int(i) for i in mem._indexes["obs"].ids()), dtype=np.int64)
    vecs = mem._indexes["obs"].reconstruct(ids)
    res: dict[str, Any] = {}
    built = {}
    for kind, thr in (("flat", 10**12), ("hnsw", 0)):
        idx = VectorIndex(dim, hnsw_threshold=thr, use_gpu=False)
        t = time.perf_counter()
        idx.add(ids, vecs)
        res[f"{kind}_build_s"] = round(time.perf_counter() - t, 3)
        built[kind] = idx
    rng = np.random.default_rng(0)
    q = vecs[rng.choice(len(vecs), size=min(200, len(vecs)), replace=False)]
    q = q + rng.normal(scale=0.02, size=q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for kind, idx in built.items():
        ts = []
        for row in q:
            t = time.perf_counter()
            idx.search(row[None, :], 10)
            ts.append(time.perf_counter() - t)
        res[f"{kind}_search_top10"] = lat(ts)
    exact = built["flat"].search(q, 10)[1]
    approx = built["hnsw"].search(q, 10)[1]
    rec = [len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=False)]
    res["hnsw_recall_at_10"] = round(float(np.mean(rec)), 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--real-steps", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "retrieval.json"))
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--show", metavar="JSON", help="only print the tables of a results file")
    args = ap.parse_args()
    console = Console(width=170) if not sys.stdout.isatty() else Console()
    if args.show:
        show(console, json.loads(Path(args.show).read_text()))
        return
    k = {"k_episodes": 4, "k_steps": 2, "window": 2}
    settings = MemorySettings(threads=THREADS, save_interval_s=3600.0, refresh_interval_s=None)
    minilm = None if args.no_minilm else SentenceTransformerEmbedder(threads=THREADS)
    fake = HashingEmbedder(384)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": THREADS,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "load_avg": os.getloadavg(),
        },
        "retrieve_args": k,
        "settings": settings.model_dump(),
        "sizes": {},
    }
    rng = random.Random(1)
    for n in [int(x) for x in args.sizes.split(",") if x]:
        console.log(f"store of {n} steps (hashing fake embedder)")
        with tempfile.TemporaryDirectory() as tmp:
            mem, db, episodes, build = build_store(
                Path(tmp), n, fake, seed=n, settings=settings, progress=console
            )
            qs = queries(rng, episodes, args.queries)
            r = measure_retrieval(mem, qs, minilm, k)
            build["single_adds_hashing_fake"] = single_adds(mem, db, 50, seed=n + 1)
            st = mem.stats()
            r["index_types"] = {key: v["type"] for key, v in st.indexes.items()}
            r["index_rows"] = {key: v["rows"] for key, v in st.indexes.items()}
            t = time.perf_counter()
            mem.rebuild()
            build["rebuild_from_sql_s"] = round(time.perf_counter() - t, 3)
            mem.close()
            t = time.perf_counter()
            again = DemoMemory(db, fake, Path(tmp) / "indexes", settings)
            build["reopen_verify_s"] = round(time.perf_counter() - t, 3)
            build["reopen_report"] = again.last_open_report
            build.update(faiss_build(again, fake.dim))
            r["build"] = build
            results["sizes"][str(n)] = r
            _save(args.out, results)  # partial results survive a later failure
            from nightowl import storage

            storage.forget(db.url)
    if minilm is not None and args.real_steps:
        console.log(f"store of {args.real_steps} steps embedded with MiniLM (bf16)")
        with tempfile.TemporaryDirectory() as tmp:
            mem, db, episodes, build = build_store(
                Path(tmp), args.real_steps, minilm, seed=7, settings=settings, progress=console
            )
            qs = queries(rng, episodes, min(args.queries, 200))
            e2e: list[float] = []
            for g, o, h in qs[:5]:
                mem.retrieve(g, o, h, **k)
            for g, o, h in qs:
                t = time.perf_counter()
                mem.retrieve(g, o, h, **k)
                e2e.append(time.perf_counter() - t)
            results["real_minilm_store"] = {
                "build": build,
                "texts_embedded": build["episodes"] + 2 * build["steps"],
                "retrieve_end_to_end": lat(e2e),
                **{key: v for key, v in measure_retrieval(mem, qs, None, k).items()},
            }
            from nightowl import storage

            storage.forget(db.url)
    out = _save(args.out, results)
    show(console, results)
    console.print(f"wrote {out}")


def _save(path: str, results: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return out


def show(console: Console, res: dict[str, Any]) -> None:
    t = Table(
        title=f"retrieval latency (ms), k_episodes=4 k_steps=2 window=2, "
        f"{res['machine']['threads']} thread(s)"
    )
    for col in (
        "stored steps",
        "episodes",
        "indexes goal/obs",
        "excl. emb p50",
        "excl. emb p99",
        "MiniLM query emb p50",
        "p99",
        "incl. emb p50",
        "incl. emb p99",
    ):
        t.add_column(col, justify="right")
    for n, r in res["sizes"].items():
        e = r["retrieve_excl_embedding"]
        q = r.get("query_embedding_minilm", {})
        i = r.get("retrieve_incl_embedding", {})
        t.add_row(
            n,
            str(r["build"]["episodes"]),
            f"{r['index_types']['goal']}/{r['index_types']['obs']}",
            f"{e['p50_ms']:.2f}",
            f"{e['p99_ms']:.2f}",
            f"{q.get('p50_ms', float('nan')):.2f}",
            f"{q.get('p99_ms', float('nan')):.2f}",
            f"{i.get('p50_ms', float('nan')):.2f}",
            f"{i.get('p99_ms', float('nan')):.2f}",
        )
    rs = res.get("real_minilm_store")
    if rs:
        e = rs["retrieve_excl_embedding"]
        ee = rs["retrieve_end_to_end"]
        t.add_row(
            f"{rs['build']['steps']} (MiniLM)",
            str(rs["build"]["episodes"]),
            "flat/flat",
            f"{e['p50_ms']:.2f}",
            f"{e['p99_ms']:.2f}",
            "",
            "",
            f"{ee['p50_ms']:.2f}",
            f"{ee['p99_ms']:.2f}",
        )
    console.print(t)
    b = Table(title="build (seconds) and global observation search")
    for col in (
        "stored steps",
        "ingest (SQL+embed+FAISS)",
        "steps/s",
        "rebuild from SQL",
        "reopen+verify",
        "FAISS flat build",
        "FAISS HNSW build",
        "flat top10 p50 ms",
        "HNSW top10 p50 ms",
        "HNSW recall@10",
    ):
        b.add_column(col, justify="right")
    for n, r in res["sizes"].items():
        x = r["build"]
        b.add_row(
            n,
            f"{x['ingest_s']:.1f}",
            f"{x['ingest_steps_per_s']:.0f}",
            f"{x['rebuild_from_sql_s']:.2f}",
            f"{x['reopen_verify_s']:.2f}",
            f"{x['flat_build_s']:.2f}",
            f"{x['hnsw_build_s']:.2f}",
            f"{x['flat_search_top10']['p50_ms']:.3f}",
            f"{x['hnsw_search_top10']['p50_ms']:.3f}",
            f"{x['hnsw_recall_at_10']:.3f}",
        )
    if rs:
        x = rs["build"]
        b.add_row(
            f"{x['steps']} (MiniLM)",
            f"{x['ingest_s']:.1f}",
            f"{x['ingest_steps_per_s']:.0f}",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        )
    console.print(b)


if __name__ == "__main__":
    main()
