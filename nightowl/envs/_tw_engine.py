"""TextWorld's engine is not thread-safe: one process-wide lock, and a game that holds it.

Three parts of the engine keep state in module globals, and the TextWorld (``tw``) and
ALFWorld adapters both run them:

* the tatsu parsers, one module-global instance each: ``textworld.logic._PARSER``
  (loading a game, and every PDDL feedback text through
  ``Rule.parse_conjunctive_query``), ``textworld.envs.pddl.logic._PARSER`` (loading a
  PDDL game) and ``textworld.envs.pddl.textgen._PARSER`` (every reset *and step* of a
  PDDL game: ``ContextSensitiveGrammar.derive`` parses the text it derives). Two
  threads in one parser fail with "pop from empty list", "list index out of range",
  "'TerminalSymbol' object is not iterable" or "(1:59) expecting '#'";
* Fast Downward's translator (``fast_downward.pddl2sas``, on every PDDL ``reset``): it
  writes its flags into the ``translate.options`` module (the two calls of one reset
  differ in ``optimize``), sets ``sys.argv`` and swaps ``sys.stdout`` for a StringIO
  while it runs. Two overlapping calls leave ``sys.stdout`` pointing at the other
  call's StringIO for good: every later line the process prints (episode lines, the
  summary table) vanishes and the command still exits 0 -- the "run ended mid-way with
  exit 0" of issue 25 (/tmp script: 4 threads x 4 calls, stdout replaced 3 runs of 3);
* ALFWorld's handcoded expert draws from ``handcoded_expert.random``, one module
  global; the adapter seeds it per task so an expert episode replays exactly.

`TEXTWORLD_ENGINE_LOCK` serialises all of it: game generation and start in both
adapters, and every reset/step/close of an ALFWorld game through `SerialGame`. Model
calls and everything else in an episode still run concurrently; the engine calls are
pure Python under the GIL, so serialising them costs little wall time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: held by every call into TextWorld's engine (reentrant: generation starts games)
TEXTWORLD_ENGINE_LOCK = threading.RLock()


class SerialGame:
    """A TextWorld env whose ``reset``/``step``/``close`` hold `TEXTWORLD_ENGINE_LOCK`.

    Args:
        env: the TextWorld environment (wrappers included).
        enter: called under the lock before each engine call, e.g. to point a module
            global (ALFWorld's expert RNG) at this game's own state.
    """

    def __init__(self, env: Any, enter: Callable[[], None]) -> None:
        self.env = env
        self._enter = enter

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with TEXTWORLD_ENGINE_LOCK:
            self._enter()
            return fn(*args)

    def reset(self) -> Any:
        """``env.reset()`` under the lock."""
        return self._call(self.env.reset)

    def step(self, command: str) -> Any:
        """``env.step(command)`` under the lock."""
        return self._call(self.env.step, command)

    def close(self) -> None:
        """``env.close()`` under the lock."""
        self._call(self.env.close)
