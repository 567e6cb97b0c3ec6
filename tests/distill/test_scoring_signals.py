"""Scoring variants and the nearest-demo-action signal (pure functions + a scripted model)."""

import asyncio
import math

import pytest

from nightowl.distill.scoring import action_continuations, rank_scores, score_actions
from nightowl.distill.signals import analogous_action, demo_hint, jaccard
from nightowl.llm.base import ScoredContinuations, Usage
from nightowl.memory.store import DemoWindow, StepRecord


def test_rank_scores_methods():
    raw, toks, cf = [-2.0, -6.0], [1, 4], [-1.0, -7.0]
    assert rank_scores(raw, toks, "sum") == [-2.0, -6.0]
    assert rank_scores(raw, toks, "mean") == [-2.0, -1.5]
    assert rank_scores(raw, toks, "calibrated", cf) == [-1.0, 1.0]
    assert rank_scores(raw, toks, "calibrated-mean", cf) == [-1.0, 0.25]
    with pytest.raises(ValueError):
        rank_scores(raw, toks, "calibrated")
    with pytest.raises(ValueError):
        rank_scores(raw, toks, "best")


class ScriptedScorer:
    """Scripted fake: log p depends on whether the prompt is content-free."""

    def __init__(self):
        self.prompts = []

    async def score_continuations(self, prompt, conts):
        self.prompts.append(prompt)
        free = "N/A" in prompt
        lps = tuple((-1.0 if "take" in c else -3.0) if not free else
                    (-0.5 if "take" in c else -4.0) for c in conts)
        return ScoredContinuations(logprobs=lps, token_counts=tuple(2 for _ in conts),
                                   usage=Usage(prompt_tokens=10))


def test_score_actions_calibrated_makes_two_calls_and_sums_usage():
    m = ScriptedScorer()
    got = asyncio.run(score_actions(m, "P Action:", ["take coin", "go east"],
                                    method="calibrated", content_free_prompt="N/A Action:"))
    assert m.prompts == ["P Action:", "N/A Action:"]
    assert got.scores == (-0.5, 1.0) and got.usage.prompt_tokens == 20
    plain = asyncio.run(score_actions(m, "P Action:", ["take coin", "go east"]))
    assert plain.scores == (-1.0, -3.0) and plain.content_free is None
    assert action_continuations(["go east"]) == [" go east\n"]
    with pytest.raises(ValueError):
        asyncio.run(score_actions(m, "P", ["a"], method="calibrated"))


def window(obs_actions, hits, score, task="t/1"):
    steps = [StepRecord(idx=i, observation=o, action=a, valid_actions=None)
             for i, (o, a) in enumerate(obs_actions)]
    return DemoWindow(demo_id=1, episode_id="e", task_id=task, env="twx", goal="g",
                      source="collect", steps=steps, hit_idxs=hits, episode_score=0.9,
                      step_score=score, rank=0)


def test_demo_hint_takes_the_best_hit_and_maps_by_analogy():
    w1 = window([("You are in the kitchen. Simon says, 'touch pineapple'.", "touch pineapple"),
                 ("You won", "look")], [0], 1.2)
    w2 = window([("A hallway with a door", "move north")], [0], 0.4, task="t/2")
    obs = "You are in the kitchen. Simon says, 'touch cucumber'."
    valid = ["touch cucumber", "touch banana", "eat banana"]
    h = demo_hint([w2, w1], obs, valid)
    assert h is not None and h.demo_action == "touch pineapple"
    assert h.action == "touch cucumber" and h.how == "analogy"
    # an exact valid action maps as is; no demos -> no hint
    h2 = demo_hint([w2], "a hallway", ["move north", "move south"])
    assert h2 is not None and h2.action == "move north" and h2.how == "exact"
    assert demo_hint([], obs, valid) is None


def test_analogy_refuses_ambiguous_or_verbless_mappings():
    assert analogous_action("open fridge", "a fridge", "a box and a crate",
                            ["open box", "open crate"]) is None
    assert analogous_action("fly away", "x", "y", ["open box"]) is None
    assert analogous_action("open fridge", "x", "y", ["open box"]) == "open box"
    assert math.isclose(jaccard("Move 3: the red room", "the red room, move 4"), 1.0)
