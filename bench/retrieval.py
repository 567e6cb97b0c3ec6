"""Demo-memory retrieval benchmark: 100k and 1M stored steps side by side.

One command (``python bench/retrieval.py``; add ``--with-1m`` for the 1M store, ~15-25
minutes on the 2-core machine) prints a table and writes bench/results/retrieval.json.

Per store size, on SQLite in a temp folder, faiss/torch on NIGHTOWL_THREADS (default 1):

* **fill**: synthetic TextWorld-like demo episodes (6-14 steps) bulk-inserted into the
  real tables (``episodes``, ``steps``, ``demos``, ``demo_steps``) with executemany;
  the stored vectors come from the *hashing fake* (`HashingEmbedder`, 384 dims):
  embedding 2M texts with MiniLM would take hours here. Observations are drawn from a
  pool of 50k texts (text games repeat rooms); every step has its own history text.
* **rebuild from SQL**: the first `DemoMemory` open finds no index files, verifies every
  stored text hash, builds the three indexes from the stored vectors and saves them.
  **reopen**: the second open loads and verifies the saved files (and, by default,
  re-hashes every stored text; in brackets with ``verify_texts_on_open=False``).
* **incremental add**: single `add_episode` calls (one transaction each) on the full store.
* **retrieve excl. embedding**: `retrieve(..., query_vectors=...)`: goal search, exact
  in-episode step scoring, step rows (LRU cache, misses in one SELECT), windows.
* **retrieve incl. embedding**: `retrieve(goal, obs, history)` through the real query
  path: the three key texts go through the memory's LRU query cache and the misses are
  embedded by the real all-MiniLM-L6-v2 in one call (dtype chosen for this CPU); the
  vectors used for the search are the fake's, so that they match the stored ones.
  Queries come as 30 episodes of 10 steps (the goal repeats within an episode).
* **query embedding alone**: MiniLM on the 2 and 3 key texts of a query, fp32 vs bf16.
* **goal index**: FAISS-only Flat vs HNSW on the store's goal vectors (build, top-10
  latency, recall@10 vs exact); the step keys stay flat (read by id only).
* **footprint**: process RSS after open, index files and database size.

``--profile`` writes a cProfile of the incl.-embedding loop per size next to the JSON.
``--show FILE`` reprints the table of a results file.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
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
from sqlalchemy import insert, select  # noqa: E402

from nightowl.ledger import Episode, Ledger  # noqa: E402
from nightowl.memory import (  # noqa: E402
    DemoMemory,
    HashingEmbedder,
    MemorySettings,
    SentenceTransformerEmbedder,
    StepRecord,
)
from nightowl.memory._index import VectorIndex  # noqa: E402
from nightowl.memory._records import clip, hist_text, sha1  # noqa: E402
from nightowl.memory.schema import DemoRow, DemoStepRow, StepRow  # noqa: E402
from nightowl.storage import forget, open_db  # noqa: E402

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


def episode(rng: random.Random, obs_pool: Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
    goal = _fill(rng, rng.choice(VERBS_GOAL))
    n = rng.randint(6, 14)
    return goal, [(rng.choice(obs_pool), _fill(rng, rng.choice(ACTIONS))) for _ in range(n)]


def lat(xs: list[float]) -> dict[str, float]:
    ms = np.asarray(xs) * 1000
    if len(ms) == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan"), "n": 0}
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(statistics.fmean(ms)), 3),
        "n": len(ms),
    }


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "threads": THREADS,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


class MiniLMOnMisses:
    """Benchmark embedder: returns the fake's vectors (they match the stored ones) and,
    while ``minilm`` is set, first runs the real model on the same texts so that the
    wall time is the real model's on exactly the texts the query path embeds."""

    def __init__(self, fake: HashingEmbedder) -> None:
        self.fake = fake
        self.minilm: SentenceTransformerEmbedder | None = None
        self.calls = 0
        self.texts = 0

    @property
    def dim(self) -> int:
        return self.fake.dim

    @property
    def model_name(self) -> str:
        return self.fake.model_name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.minilm is not None:
            self.calls += 1
            self.texts += len(texts)
            self.minilm.embed(texts)
        return self.fake.embed(texts)


def fill_sql(db: Any, n_steps: int, seed: int, fake: HashingEmbedder, s: MemorySettings) -> dict:
    """Bulk-insert demo episodes with fake vectors; the texts' hashes match what
    `DemoMemory` would store, so its open verifies them and rebuilds without the model."""
    rng = random.Random(seed)
    obs_pool = [_observation(rng) for _ in range(50_000)]
    obs_vec = dict(
        zip(obs_pool, fake.embed([clip(o, s.max_text_chars) for o in obs_pool]), strict=True)
    )
    run = Ledger(db).start_run("bench-retrieval", "collect", {"n_steps": n_steps})
    episodes: list[tuple[str, list[tuple[str, str]]]] = []
    total, step_id, demo_id = 0, 0, 0
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    while total < n_steps:
        ep_rows, step_rows, demo_rows, ds_rows = [], [], [], []
        while total < n_steps and len(ep_rows) < 2000:
            goal, pairs = episode(rng, obs_pool)
            pairs = pairs[: n_steps - total]
            ep = uuid.uuid4().hex
            demo_id += 1
            ep_rows.append(
                {
                    "id": ep,
                    "run_id": run,
                    "task_id": f"task-{demo_id}",
                    "env": "synthetic",
                    "split": "train",
                    "status": "done",
                    "success": True,
                    "n_steps": len(pairs),
                    "started_at": now,
                }
            )
            gtext = clip(goal, s.max_text_chars)
            htexts = [
                hist_text(goal, [a for _, a in pairs[:i]], s.history_len, s.max_text_chars)
                for i in range(len(pairs))
            ]
            gv, *hv = fake.embed([gtext, *htexts])
            demo_rows.append(
                {
                    "id": demo_id,
                    "episode_id": ep,
                    "goal": goal,
                    "env": "synthetic",
                    "task_id": f"task-{demo_id}",
                    "source": "collect",
                    "n_steps": len(pairs),
                    "embed_model": fake.model_name,
                    "goal_sha": sha1(gtext),
                    "goal_vec": gv.tobytes(),
                    "created_at": now,
                }
            )
            for i, ((o, a), ht, h) in enumerate(zip(pairs, htexts, hv, strict=True)):
                step_id += 1
                step_rows.append(
                    {
                        "id": step_id,
                        "episode_id": ep,
                        "idx": i,
                        "observation": o,
                        "action": a,
                        "reward": 0.0,
                        "done": i == len(pairs) - 1,
                        "actor": "teacher",
                        "created_at": now,
                    }
                )
                ds_rows.append(
                    {
                        "step_id": step_id,
                        "demo_id": demo_id,
                        "embed_model": fake.model_name,
                        "obs_sha": sha1(clip(o, s.max_text_chars)),
                        "obs_vec": obs_vec[o].tobytes(),
                        "hist_sha": sha1(ht),
                        "hist_vec": h.tobytes(),
                    }
                )
            episodes.append((goal, pairs))
            total += len(pairs)

        batch = (
            (Episode, ep_rows),
            (StepRow, step_rows),
            (DemoRow, demo_rows),
            (DemoStepRow, ds_rows),
        )
        db.write(lambda sess, batch=batch: [sess.execute(insert(t), rows) for t, rows in batch])
    return {
        "episodes": episodes,
        "obs_pool": obs_pool,
        "fill_sql_s": round(time.perf_counter() - t0, 2),
        "steps": total,
        "n_episodes": len(episodes),
    }


def query_stream(
    rng: random.Random, episodes: list, obs_pool: list[str], n_eps: int, n_steps: int
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Queries as an agent makes them: ``n_eps`` episodes of ``n_steps`` steps."""
    out = []
    for _ in range(n_eps):
        goal, pairs = rng.choice(episodes)
        qgoal = goal if rng.random() < 0.3 else _fill(rng, rng.choice(VERBS_GOAL))
        hist: list[tuple[str, str]] = []
        for _ in range(n_steps):
            obs = rng.choice(pairs)[0] if rng.random() < 0.5 else _observation(rng)
            out.append((qgoal, obs, list(hist)))
            hist.append((obs, _fill(rng, rng.choice(ACTIONS))))
    return out


def single_adds(mem: DemoMemory, db: Any, n: int, seed: int, obs_pool: list[str]) -> dict:
    led = Ledger(db)
    run = led.start_run("bench-single-adds", "collect", {})
    rng = random.Random(seed)
    ts, steps = [], 0
    for i in range(n):
        goal, pairs = episode(rng, obs_pool)
        ep = led.start_episode(run, f"single-{i}", "synthetic", "train")
        recs = [StepRecord(idx=j, observation=o, action=a) for j, (o, a) in enumerate(pairs)]
        t = time.perf_counter()
        mem.add_episode(ep, goal, recs)
        ts.append(time.perf_counter() - t)
        steps += len(pairs)
    return {"add_episode": lat(ts), "per_step_ms": round(sum(ts) / steps * 1000, 3)}


def goal_index_choice(vecs: np.ndarray) -> dict[str, Any]:
    """FAISS-only Flat vs HNSW on the goal vectors: build, top-10 latency, recall@10."""
    ids = np.arange(len(vecs), dtype=np.int64)
    res: dict[str, Any] = {"rows": len(vecs)}
    built = {}
    for kind, thr in (("flat", 2**62), ("hnsw", 0)):
        idx = VectorIndex(vecs.shape[1], hnsw_threshold=thr, use_gpu=False)
        t = time.perf_counter()
        idx.add(ids, vecs)
        res[f"{kind}_build_s"] = round(time.perf_counter() - t, 3)
        built[kind] = idx
    rng = np.random.default_rng(0)
    q = vecs[rng.choice(len(vecs), size=min(200, len(vecs)), replace=False)]
    q = q + rng.normal(scale=0.05, size=q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for kind, idx in built.items():
        ts = []
        for row in q:
            t = time.perf_counter()
            idx.search(row[None, :], 10)
            ts.append(time.perf_counter() - t)
        res[f"{kind}_top10"] = lat(ts)
    exact, approx = built["flat"].search(q, 10)[1], built["hnsw"].search(q, 10)[1]
    res["hnsw_recall_at_10"] = round(
        float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])), 4
    )
    return res


def embed_dtypes(qs: list, history_len: int, n: int) -> dict[str, Any]:
    """MiniLM on a query's key texts: fp32 vs bf16, 3 texts (cold) and 2 (goal cached)."""
    out: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        e = SentenceTransformerEmbedder(dtype=dtype, threads=THREADS)
        for g, o, _h in qs[:3]:
            e.embed([g, o])
        for k in (3, 2):
            ts = []
            for g, o, h in qs[:n]:
                texts = [g, o, hist_text(g, [a for _, a in h], history_len, 1000)][-k:]
                t = time.perf_counter()
                e.embed(texts)
                ts.append(time.perf_counter() - t)
            out[f"{dtype}_{k}_texts"] = lat(ts)
    return out


def _dump(prof: cProfile.Profile, path: Path) -> None:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
    path.write_text(buf.getvalue())


def measure(
    mem: DemoMemory, emb: MiniLMOnMisses, minilm: Any, qs: list, k: dict, profile_to: Path | None
) -> dict[str, Any]:
    st = mem.settings

    def key_texts(g: str, o: str, h: list[tuple[str, str]]) -> list[str]:
        acts = [a for _, a in h]
        return [
            clip(g, st.max_text_chars),
            clip(o, st.max_text_chars),
            hist_text(g, acts, st.history_len, st.max_text_chars),
        ]

    # the fake's vectors, computed without touching the memory's query cache, so that
    # the incl. loop below misses the cache the way a fresh agent would
    fake_q = [emb.fake.embed(key_texts(g, o, h)) for g, o, h in qs]
    for (g, o, h), v in list(zip(qs, fake_q, strict=True))[:10]:
        mem.retrieve(g, o, h, query_vectors=v, **k)
    excl, n_steps = [], []
    prof_excl = cProfile.Profile() if profile_to else None
    for (g, o, h), v in zip(qs, fake_q, strict=True):
        if prof_excl:
            prof_excl.enable()
        t = time.perf_counter()
        wins = mem.retrieve(g, o, h, query_vectors=v, **k)
        excl.append(time.perf_counter() - t)
        if prof_excl:
            prof_excl.disable()
        n_steps.append(sum(len(w.steps) for w in wins))
    if prof_excl and profile_to:
        _dump(prof_excl, profile_to.with_name(profile_to.stem + "_excl.txt"))
    out: dict[str, Any] = {
        "retrieve_excl_embedding": lat(excl),
        "steps_per_query": round(statistics.fmean(n_steps), 2),
    }
    if minilm is None:
        return out
    emb.minilm = minilm
    for g, o, _h in qs[:5]:
        minilm.embed([g, o])  # warm the model, not the cache
    prof = cProfile.Profile() if profile_to else None
    incl = []
    if prof:
        prof.enable()
    for g, o, h in qs:
        t = time.perf_counter()
        mem.retrieve(g, o, h, **k)
        incl.append(time.perf_counter() - t)
    if prof and profile_to:
        prof.disable()
        _dump(prof, profile_to)
    out["retrieve_incl_embedding"] = lat(incl)
    out["query_texts_embedded_per_query"] = round(emb.texts / len(qs), 2)
    out["query_cache_hit_rate"] = round(1 - emb.texts / (3 * len(qs)), 3)
    emb.minilm = None
    return out


def run_size(n: int, args: Any, minilm: Any, console: Console, out_dir: Path) -> dict[str, Any]:
    k = {"k_episodes": 4, "k_steps": 2, "window": 2}
    settings = MemorySettings(threads=THREADS, save_interval_s=3600.0, refresh_interval_s=None)
    fake = HashingEmbedder(384)
    emb = MiniLMOnMisses(fake)
    res: dict[str, Any] = {"load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = open_db(url=url)
        console.log(f"{n}: filling SQL")
        filled = fill_sql(db, n, seed=n, fake=fake, s=settings)
        res["fill_sql_s"], res["steps"] = filled["fill_sql_s"], filled["steps"]
        res["episodes"] = filled["n_episodes"]
        console.log(f"{n}: filled in {res['fill_sql_s']} s; opening (rebuild from SQL)")
        rss0 = rss_mb()
        t = time.perf_counter()
        mem = DemoMemory(db, emb, Path(tmp) / "indexes", settings)
        res["rebuild_from_sql_open_s"] = round(time.perf_counter() - t, 2)
        res["open_report"] = mem.last_open_report
        res["rss_mb_indexes"] = round(rss_mb() - rss0, 1)
        mem.close()
        del mem
        t = time.perf_counter()
        mem = DemoMemory(db, emb, Path(tmp) / "indexes", settings)
        res["reopen_verify_s"] = round(time.perf_counter() - t, 2)
        res["reopen_report"] = mem.last_open_report
        mem.close()
        del mem
        trusting = settings.model_copy(update={"verify_texts_on_open": False})
        t = time.perf_counter()
        mem = DemoMemory(db, emb, Path(tmp) / "indexes", trusting)
        res["reopen_no_text_verify_s"] = round(time.perf_counter() - t, 2)
        st = mem.stats()
        res["index_types"] = {key: v["type"] for key, v in st.indexes.items()}
        res["index_rows"] = {key: v["rows"] for key, v in st.indexes.items()}
        res["index_files_mb"] = round(
            sum(f.stat().st_size for f in (Path(tmp) / "indexes").iterdir()) / 2**20, 1
        )
        res["db_mb"] = round(sum(f.stat().st_size for f in Path(tmp).glob("bench.db*")) / 2**20, 1)
        console.log(
            f"{n}: open {res['rebuild_from_sql_open_s']} s, reopen "
            f"{res['reopen_verify_s']} s; querying"
        )
        rng = random.Random(n + 1)
        qs = query_stream(rng, filled["episodes"], filled["obs_pool"], args.query_episodes, 10)
        profile_to = out_dir / f"retrieval_profile_{n}.txt" if args.profile else None
        res.update(measure(mem, emb, minilm, qs, k, profile_to))
        res["incremental"] = single_adds(mem, db, 30, seed=n + 2, obs_pool=filled["obs_pool"])
        blobs = db.read(lambda s: [b for (b,) in s.execute(select(DemoRow.goal_vec))])
        gvecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, fake.dim)
        console.log(f"{n}: goal index choice on {len(gvecs)} vectors")
        res["goal_index_choice"] = goal_index_choice(np.ascontiguousarray(gvecs))
        res["load_avg_after"] = os.getloadavg()
        mem.close()
        forget(url)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="100000", help="comma-separated stored-step counts")
    ap.add_argument("--with-1m", action="store_true", help="add the 1,000,000-step store")
    ap.add_argument("--query-episodes", type=int, default=30, help="10 queries each")
    ap.add_argument("--dtype-queries", type=int, default=30)
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--tmp", default=None, help="folder for the temporary stores")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "retrieval.json"))
    ap.add_argument("--show", metavar="JSON", help="only print the table of a results file")
    args = ap.parse_args()
    console = Console(width=200)
    if args.show:
        show(console, json.loads(Path(args.show).read_text()))
        return
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.with_1m and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    minilm = None
    results: dict[str, Any] = {
        "machine": machine(),
        "load_avg_start": os.getloadavg(),
        "retrieve_args": {"k_episodes": 4, "k_steps": 2, "window": 2},
        "command": " ".join(["python bench/retrieval.py", *sys.argv[1:]]),
        "sizes": {},
    }
    if not args.no_minilm:
        minilm = SentenceTransformerEmbedder(threads=THREADS)
        results["machine"]["embedder_dtype"] = minilm.dtype
        results["machine"]["embedder_dtype_reason"] = minilm.dtype_reason
        rng = random.Random(0)
        pool = [_observation(rng) for _ in range(100)]
        qs = query_stream(rng, [episode(rng, pool) for _ in range(50)], pool, 10, 5)
        console.log("query embedding: fp32 vs bf16")
        results["query_embedding_dtypes"] = embed_dtypes(qs, 4, args.dtype_queries)
    for n in sizes:
        results["sizes"][str(n)] = run_size(n, args, minilm, console, out.parent)
        out.write_text(json.dumps(results, indent=2))  # partial results survive
    results["load_avg_end"] = os.getloadavg()
    out.write_text(json.dumps(results, indent=2))
    show(console, results)
    console.print(f"wrote {out}")


def _f(d: dict[str, Any] | None, key: str) -> str:
    return f"{d[key]:.1f}" if d and key in d else "-"


def show(console: Console, res: dict[str, Any]) -> None:
    m = res["machine"]
    console.print(
        f"CPU {m['cpu_model']} ({m['cpus']} cpus), {m['threads']} thread(s), embedder dtype "
        f"{m.get('embedder_dtype', '-')} ({m.get('embedder_dtype_reason', '')}); "
        f"load average start {res['load_avg_start'][0]:.1f}, end "
        f"{res.get('load_avg_end', [float('nan')])[0]:.1f}"
    )
    t = Table(title="retrieval (ms) k_episodes=4 k_steps=2 window=2; build (s); footprint (MB)")
    cols = [
        "stored steps",
        "episodes",
        "goal/obs index",
        "excl. emb p50/p99",
        "incl. emb p50/p99",
        "texts embedded/query",
        "fill SQL",
        "rebuild from SQL (open)",
        "reopen",
        "add_episode p50/p99 ms",
        "RSS indexes",
        "index files",
        "db",
        "load before/after",
    ]
    for c in cols:
        t.add_column(c, justify="right")
    for n, r in res["sizes"].items():
        e, i, a = r["retrieve_excl_embedding"], r.get("retrieve_incl_embedding"), r["incremental"]
        t.add_row(
            f"{int(n):,}",
            f"{r['episodes']:,}",
            f"{r['index_types']['goal']}/{r['index_types']['obs']}",
            f"{_f(e, 'p50_ms')} / {_f(e, 'p99_ms')}",
            f"{_f(i, 'p50_ms')} / {_f(i, 'p99_ms')}",
            str(r.get("query_texts_embedded_per_query", "-")),
            f"{r['fill_sql_s']:.0f}",
            f"{r['rebuild_from_sql_open_s']:.1f}",
            f"{r['reopen_verify_s']:.1f} ({r.get('reopen_no_text_verify_s', float('nan')):.1f})",
            f"{_f(a['add_episode'], 'p50_ms')} / {_f(a['add_episode'], 'p99_ms')}",
            f"{r['rss_mb_indexes']:.0f}",
            f"{r['index_files_mb']:.0f}",
            f"{r['db_mb']:.0f}",
            f"{r['load_avg_before'][0]:.1f} / {r['load_avg_after'][0]:.1f}",
        )
    console.print(t)
    g = Table(title="goal index: FAISS Flat vs HNSW (M=32, efSearch 64) on the store's goals")
    for c in (
        "stored steps",
        "goal rows",
        "flat build s",
        "HNSW build s",
        "flat top10 p50/p99",
        "HNSW top10 p50/p99",
        "HNSW recall@10",
    ):
        g.add_column(c, justify="right")
    for n, r in res["sizes"].items():
        x = r["goal_index_choice"]
        g.add_row(
            f"{int(n):,}",
            f"{x['rows']:,}",
            f"{x['flat_build_s']:.2f}",
            f"{x['hnsw_build_s']:.2f}",
            f"{x['flat_top10']['p50_ms']:.2f} / {x['flat_top10']['p99_ms']:.2f}",
            f"{x['hnsw_top10']['p50_ms']:.2f} / {x['hnsw_top10']['p99_ms']:.2f}",
            f"{x['hnsw_recall_at_10']:.3f}",
        )
    console.print(g)
    d = res.get("query_embedding_dtypes")
    if d:
        q = Table(title="MiniLM query embedding alone (ms p50 / p99)")
        for c in ("dtype", "3 texts (goal, obs, hist)", "2 texts (goal cached)"):
            q.add_column(c, justify="right")
        for dt in ("float32", "bfloat16"):
            q.add_row(
                dt,
                f"{_f(d[f'{dt}_3_texts'], 'p50_ms')} / {_f(d[f'{dt}_3_texts'], 'p99_ms')}",
                f"{_f(d[f'{dt}_2_texts'], 'p50_ms')} / {_f(d[f'{dt}_2_texts'], 'p99_ms')}",
            )
        console.print(q)


if __name__ == "__main__":
    main()
