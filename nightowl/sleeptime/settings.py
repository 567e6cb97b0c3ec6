"""The generator config of sleep-time jobs (re-exported from `nightowl.config_sleep`).

Sleep-time settings are the ``sleep`` section of the one `nightowl.config.Settings`
(``settings.sleep``, env ``NIGHTOWL_SLEEP__<FIELD>``, a ``[sleep]`` table in
``nightowl.toml``); `GeneratorConfig` is defined next to that section so that
``settings.sleep.generator()`` can build it.
"""

from __future__ import annotations

from nightowl.config_sleep import GeneratorConfig, ProbeKind

__all__ = ["GeneratorConfig", "ProbeKind"]
