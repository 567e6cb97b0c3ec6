"""The application layer: nightowl's use cases over one composition root.

`Nightowl` owns settings, database, ledger, models and memory; the functions below
are what the CLI, the Celery workers and user scripts call. Presentation (rich) stays
in the CLI; progress comes out as events (`nightowl.app.events`).
"""

from nightowl.app.calibrate import CalibrationReport, collect_states
from nightowl.app.calibrate import calibrate as calibrate_rules
from nightowl.app.collect import CollectRequest, CollectResult, add_demos, collect_demos
from nightowl.app.distributed import start_distributed_run
from nightowl.app.plan import RunSpec
from nightowl.app.root import Nightowl
from nightowl.app.runs import RunSummary, run_tasks
from nightowl.app.showcase import ShowcaseOptions, run_showcase
from nightowl.distill.calibrate import CalibrateOptions

__all__ = [
    "CalibrateOptions",
    "CalibrationReport",
    "CollectRequest",
    "CollectResult",
    "Nightowl",
    "RunSpec",
    "RunSummary",
    "ShowcaseOptions",
    "add_demos",
    "calibrate_rules",
    "collect_demos",
    "collect_states",
    "run_showcase",
    "run_tasks",
    "start_distributed_run",
]
