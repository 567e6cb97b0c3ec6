"""Action parser: turn a model's text into an action, tolerating chatter.

Small models add chatter ("Sure! I will go north."), quotes, prefixes ("Action: ") and
several lines. `parse_action` keeps the first meaningful line, strips such noise and,
when the environment lists valid actions, maps the text to the closest one (exact ->
contained -> string similarity above a cutoff). Failures are reported, never raised:
the caller escalates or retries by its rules.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from typing import Literal

ParseMethod = Literal["exact", "contained", "closest", "free", "code", "failed"]

_PREFIX = re.compile(
    r"^\s*(?:>+|\*+|-+|\d+[.)]|action\s*[:=]|next action\s*[:=]|command\s*[:=]|"
    r"answer\s*[:=]|i will|i'll|let me|let's|i should|i would)\s*",
    re.IGNORECASE,
)
_WS = re.compile(r"\s+")


def normalize_action(text: str) -> str:
    """Canonical form for voting and matching: lowercase, single spaces, no edge punctuation."""
    t = _WS.sub(" ", (text or "").replace("\n", " ")).strip().lower()
    return t.strip(" .!?;:,'\"`")


_FENCE = re.compile(r"^```[a-z]*\n?|\n?```$")
_LABEL = re.compile(r"^\s*(?:action|code|next action)\s*[:=]\s*", re.IGNORECASE)


def code_of(text: str) -> str | None:
    """``text`` as a code action (fences and an ``Action:`` label removed), or None.

    Code is Python that parses and calls something, such as AppWorld's
    ``apis.venmo.send_money(...)``; "take coin" or "look" is not code.
    """
    found = _parsed_code(text)
    return found[0] if found is not None else None


def _parsed_code(text: str) -> tuple[str, ast.Module] | None:
    code = _LABEL.sub("", _FENCE.sub("", (text or "").strip())).strip()
    if "(" not in code:
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    return (code, tree) if any(isinstance(n, ast.Call) for n in ast.walk(tree)) else None


def canonical_action(text: str) -> str:
    """The voting key of an answer: samples with the same key agree.

    A code action (`code_of`) is compared by its syntax tree: ``ast.unparse`` drops
    comments and formatting and unifies quotes, but keeps the case of names and string
    values, which change what the code does. Any other answer is compared by
    `normalize_action` ("Go North." and "go north" agree).
    """
    found = _parsed_code(text)  # parsed once
    return ast.unparse(found[1]) if found is not None else normalize_action(text)


@dataclass(frozen=True, kw_only=True)
class ParseResult:
    """The parsed action (None on failure), how it was found, and the raw text."""

    action: str | None
    method: ParseMethod
    raw: str


def _clean(raw: str) -> str:
    for line in (raw or "").splitlines():
        line = line.strip()
        if not line:
            continue
        prev = None
        while prev != line:  # strip stacked prefixes ("Action: > go north")
            prev = line
            line = _PREFIX.sub("", line, count=1).strip()
        line = line.strip(" .!?;:,'\"`*")
        if line:
            return line
    return ""


def parse_action(
    raw: str,
    valid_actions: tuple[str, ...] | list[str] | None = None,
    *,
    cutoff: float = 0.6,
    max_len: int = 200,
) -> ParseResult:
    """Parse ``raw`` model text into an action.

    Args:
        raw: the model's completion.
        valid_actions: the environment's valid actions, when known.
        cutoff: minimum `difflib` similarity to map to the closest valid action.
        max_len: free-form actions longer than this are cut (runaway generations); a
            code action (`code_of`, only without valid actions) is kept whole, as written.
    """
    if not valid_actions:
        code = code_of(raw)
        if code is not None:  # acted on as written: case, quotes and lines matter
            return ParseResult(action=code, method="code", raw=raw)
    cleaned = _clean(raw)
    norm = normalize_action(cleaned)
    if not norm:
        return ParseResult(action=None, method="failed", raw=raw or "")
    if not valid_actions:
        return ParseResult(action=norm[:max_len], method="free", raw=raw)
    by_norm: dict[str, str] = {}
    for a in valid_actions:
        by_norm.setdefault(normalize_action(a), a)
    if norm in by_norm:
        return ParseResult(action=by_norm[norm], method="exact", raw=raw)
    # a valid action said inside chatter: prefer the longest one contained
    contained = [
        n
        for n in by_norm
        if n and re.search(r"(?<![a-z0-9])" + re.escape(n) + r"(?![a-z0-9])", norm)
    ]
    if contained:
        best = max(contained, key=len)
        return ParseResult(action=by_norm[best], method="contained", raw=raw)
    scored = [(difflib.SequenceMatcher(None, norm, n).ratio(), n) for n in by_norm]
    sim, best = max(scored, key=lambda s: (s[0], -len(s[1])))
    if sim >= cutoff:
        return ParseResult(action=by_norm[best], method="closest", raw=raw)
    return ParseResult(action=None, method="failed", raw=raw)
