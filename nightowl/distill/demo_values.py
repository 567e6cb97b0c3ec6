"""A demo's goal values carried over to the current goal (demo adaptation).

Variants of one task differ in their values: "Take the song 'Sea Glass' out of my
playlist 'Chill'" and "... 'Neon Rain' out of my playlist 'Focus'" need the same code
with other strings. A small student copies a retrieved demo's action, values included,
so it writes the demo's ``'Chill'`` where its own goal says ``'Focus'``. When the demo's
goal and the current goal are the same sentence with some words replaced, `value_map`
pairs each replaced span with its counterpart, and `adapt` rewrites the demo's text so
the demo reads as a worked example of the current goal. Values the teacher read from its
observations (ids, tokens) are not in the goal and are left as they are: the student
must still read its own.

The pairing is word-level (`difflib` on word and punctuation tokens). Goals that differ
by more than replacements (words inserted or deleted), or that share less than half
their tokens, are not variants of one task: no map.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

#: a word (letters, digits, underscore) or one punctuation character
_TOKEN = re.compile(r"\w+|[^\w\s]")
#: least share of the longer goal's tokens the two goals must have in common
MIN_SHARED = 0.5


def value_map(demo_goal: str, goal: str) -> dict[str, str]:
    """The demo goal's replaced spans, each mapped to the current goal's span.

    >>> value_map("Take 'Sea Glass' out of 'Chill'.", "Take 'Neon Rain' out of 'Focus'.")
    {'Sea Glass': 'Neon Rain', 'Chill': 'Focus'}

    Empty when the goals are equal, are not one sentence with replaced words, or
    share less than `MIN_SHARED` of their tokens.
    """
    a = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(demo_goal)]
    b = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(goal)]
    if not a or not b:
        return {}
    matcher = difflib.SequenceMatcher(None, [t for t, *_ in a], [t for t, *_ in b], False)
    ops = matcher.get_opcodes()
    if any(op in ("insert", "delete") for op, *_ in ops):
        return {}
    shared = sum(i2 - i1 for op, i1, i2, _, _ in ops if op == "equal")
    if shared < MIN_SHARED * max(len(a), len(b)):
        return {}
    pairs: dict[str, str] = {}
    for op, i1, i2, j1, j2 in ops:
        if op != "replace":
            continue
        old = demo_goal[a[i1][1] : a[i2 - 1][2]]
        new = goal[b[j1][1] : b[j2 - 1][2]]
        if pairs.setdefault(old, new) != new:
            return {}  # one demo value stands for two current ones: ambiguous
    return pairs


def adapt(text: str, pairs: Mapping[str, str]) -> str:
    r"""``text`` with every whole occurrence of a mapped span replaced, all at once.

    A span matches where it is not part of a longer word (an escape such as ``\n``
    just before it still counts as a boundary, as in ``'\nMiddlemarch'``); longer spans
    win over shorter ones. Replacements are not rewritten again.
    """
    if not pairs or not text:
        return text
    keys = sorted(pairs, key=len, reverse=True)
    alternation = "|".join(re.escape(k) for k in keys)
    pattern = re.compile(rf"(?:(?<=\\[ntr])|(?<!\w))(?:{alternation})(?!\w)")
    return pattern.sub(lambda m: pairs[m.group()], text)
