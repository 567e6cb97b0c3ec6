"""One error tree for nightowl.

`UserError` subclasses are mistakes a user can fix (bad config, unknown model or task);
the CLI prints them as one line and exits with code 2. `RunError` subclasses are
failures while running (a model server errored, a budget ran out); the agent loop turns
most of them into recorded observations. Every exception keeps its fields as plain
attributes and pickles cleanly (Celery sends them between processes).
"""

from __future__ import annotations


class NightowlError(Exception):
    """Root of every error nightowl raises on purpose."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickle by re-calling __init__ with the original args *and* keyword fields.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[NightowlError], args: tuple, state: dict) -> NightowlError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


# --- user mistakes -----------------------------------------------------------------
class UserError(NightowlError):
    """A mistake the user can fix; shown as one line, exit code 2."""


class ConfigError(UserError):
    """The configuration (env vars, nightowl.toml) is malformed or inconsistent."""


class UnknownNameError(UserError):
    """A name (model, environment, task, run, context) that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str] | None = None) -> None:
        self.kind = kind
        self.name = name
        self.known = list(known or [])
        hint = ""
        if self.known:
            shown = ", ".join(self.known[:20])
            more = f" (+{len(self.known) - 20} more)" if len(self.known) > 20 else ""
            hint = f"; known: {shown}{more}"
        super().__init__(f"unknown {kind} {name!r}{hint}")


class MissingExtraError(UserError):
    """An optional dependency is not installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        self.feature = feature
        self.extra = extra
        self.package = package
        super().__init__(
            f"{feature} needs the {package!r} package: pip install 'nightowl[{extra}]'"
        )


# --- run-time failures -------------------------------------------------------------
class RunError(NightowlError):
    """A failure while running; usually recorded and survived."""


class InfrastructureError(RunError):
    """The environment or a model backend failed, not the agent.

    An episode that ends on one is recorded as an *error* (status "error"), never as a
    loss: it is kept out of success rate and cost-of-pass, and the command that ran it
    exits 1 (docs/agent.md, "Infrastructure errors").
    """


class ModelError(RunError):
    """A model backend failed (HTTP error, bad response, load failure)."""

    def __init__(
        self, message: str, *, model: str = "", status: int | None = None, body: str = ""
    ) -> None:
        self.model = model
        self.status = status
        self.body = body
        super().__init__(message)


class ModelOutputError(ModelError):
    """The model answered, but the output is empty, cut off or unparseable."""


class BackendUnavailableError(ModelError, InfrastructureError):
    """A model backend is unreachable or kept erroring (5xx, 429, timeouts) after its retries.

    The run stops early: every further episode would fail the same way.
    """

    def __init__(
        self, message: str, *, model: str = "", url: str = "", status: int | None = None,
        body: str = "",
    ) -> None:
        self.url = url
        super().__init__(message, model=model, status=status, body=body)


class BudgetExceededError(RunError):
    """A hard budget (steps, cost, tokens, teacher calls) would be exceeded."""

    def __init__(self, budget: str, limit: float, used: float) -> None:
        self.budget = budget
        self.limit = limit
        self.used = used
        super().__init__(f"{budget} budget exhausted: used {used:g} of {limit:g}")


class EnvError(InfrastructureError):
    """An environment failed (crashed engine, reset failure)."""


class StoreError(RunError):
    """The database or an index could not be read or written."""
