"""How much a set of sampled replies agree: on the final answer, else on meaning.

When the replies commit to a short checkable answer (a number, a multiple-choice
letter, yes/no, or a short name) the extracted answers are compared after
normalisation: agreement is the share of the most common one. Otherwise the replies
are embedded (sentence-transformers) and greedily clustered by cosine similarity
(>= ``sim``); agreement is the largest cluster's share. The representative reply is
the first one of the winning answer or cluster.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from nightowl.memory import Embedder

Method = Literal["answer", "meaning", "single"]

_ANSWER_MARK = re.compile(
    r"(?:final answer|the answer is|answer\s*[:=]|####|\\boxed\{)\s*\**\s*([^\n}*]+)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_CHOICE_MARKED = re.compile(r"^(?:\(([A-E])\)|([A-E])[.):])")
_CHOICE_BARE = re.compile(r"^([A-E])$")
_YESNO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
#: a reply this short (in words) is itself the answer (a name, a word)
SHORT_WORDS = 4


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """How the replies agree: ``share`` of the winner and which reply represents it."""

    method: Method
    share: float
    winner: int
    answers: tuple[str | None, ...] = ()
    #: each reply's vote: its extracted answer, or ``meaning:<cluster>``; None votes for
    #: nobody. An acceptance rule (`nightowl.distill.rules`) decides on these.
    keys: tuple[str | None, ...] = ()


def _number(text: str) -> str | None:
    nums = _NUMBER.findall(text)
    if not nums:
        return None
    f = float(nums[-1].replace(",", "").replace("$", ""))
    return str(int(f)) if f.is_integer() else f"{f:g}"


def extract_answer(text: str) -> str | None:
    """A reply's short checkable answer, normalised; None when it has none."""
    body = text.strip()
    if not body:
        return None
    if marked := _ANSWER_MARK.findall(body):
        tail = marked[-1].strip().rstrip(".").strip()
        num = _number(tail)
        if num is not None and len(tail.split()) <= 3:
            return num
        return _short(tail)
    first = body.splitlines()[0].strip()
    if yn := _YESNO.match(first):
        return yn.group(1).lower()
    if marked_choice := _CHOICE_MARKED.match(first):
        return (marked_choice.group(1) or marked_choice.group(2)).upper()
    if _CHOICE_BARE.match(first):
        return first.upper()
    if len(body.split()) <= SHORT_WORDS:
        num = _number(body)
        return num if num is not None else _short(body)
    return None


def _short(text: str) -> str | None:
    words = re.sub(r"[^\w\s.-]", " ", text.lower()).split()
    return " ".join(words) if 0 < len(words) <= SHORT_WORDS else None


def answer_agreement(replies: Sequence[str]) -> Agreement | None:
    """Agreement on extracted answers, or None when most replies have no short answer."""
    answers = tuple(extract_answer(r) for r in replies)
    have = [a for a in answers if a is not None]
    if not replies or len(have) * 2 <= len(replies):
        return None
    top, count = Counter(have).most_common(1)[0]
    return Agreement(
        method="answer", share=count / len(replies), winner=answers.index(top), answers=answers,
        keys=answers,
    )


def meaning_agreement(
    replies: Sequence[str], embedder: Embedder | None, *, sim: float = 0.8
) -> Agreement:
    """Largest cluster share of reply embeddings (greedy: join the first close cluster).

    One reply agrees with itself; several without an embedder: unknown (no votes).
    """
    if len(replies) <= 1:
        return Agreement(method="single", share=1.0 if replies else 0.0, winner=0,
                         keys=("single",) * len(replies))
    if embedder is None:
        return Agreement(method="single", share=0.0, winner=0, keys=(None,) * len(replies))
    vecs = np.asarray(embedder.embed([r.strip() or "(empty)" for r in replies]), dtype=np.float32)
    heads: list[int] = []
    members: list[list[int]] = []
    for i in range(len(replies)):
        for c, h in enumerate(heads):
            if float(vecs[i] @ vecs[h]) >= sim:
                members[c].append(i)
                break
        else:
            heads.append(i)
            members.append([i])
    best = max(range(len(members)), key=lambda c: len(members[c]))
    cluster = {i: c for c, ms in enumerate(members) for i in ms}
    return Agreement(
        method="meaning", share=len(members[best]) / len(replies), winner=members[best][0],
        keys=tuple(f"meaning:{cluster[i]}" for i in range(len(replies))),
    )


def measure_agreement(
    replies: Sequence[str], embedder: Embedder | None, *, sim: float = 0.8
) -> Agreement:
    """Answer agreement when the replies carry short answers, else meaning agreement."""
    by_answer = answer_agreement(replies)
    return by_answer if by_answer is not None else meaning_agreement(replies, embedder, sim=sim)
