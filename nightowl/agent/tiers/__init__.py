"""Concrete ladder tiers, one module per kind.

- `StudentTier` (`student`): the sampled/scored student with an acceptance rule.
- `TeacherTier` (`teacher`): any model as teacher.
- `OracleTier` (`oracle`): the environment's expert, billed as a teacher LLM.
- `BavtTier` lives with the search family in `nightowl.agent.search.tier`.

Every paid call goes through a `MeteredModel` bound to the step (`MeteredModel.bind`
with `StepContext.call_site`), so the ledger sees it; each tier charges the episode
budget with the actual cost after checking an upper bound first.
"""

from nightowl.agent.tiers.oracle import OracleTier
from nightowl.agent.tiers.student import BacktrackPolicy, RepeatPolicy, StudentTier, check_policies
from nightowl.agent.tiers.teacher import TeacherTier

__all__ = ["BacktrackPolicy", "OracleTier", "RepeatPolicy", "StudentTier", "TeacherTier",
           "check_policies"]
