import pytest

from nightowl.distill.prompt import DemoStepView, DemoView, PromptBuilder, as_demo_view


def demo(task, first, n=3, goal="find the coin"):
    return DemoView(
        goal=goal,
        task_id=task,
        first_idx=first,
        steps=tuple(
            DemoStepView(observation=f"room {task} {i}", action=f"move {i}") for i in range(n)
        ),
    )


def test_fixed_prefix_and_stable_demo_order():
    b = PromptBuilder(max_demos=3)
    p1 = b.build(goal="g", observation="o", demos=[demo("t/b", 0), demo("t/a", 2)])
    p2 = b.build(goal="g", observation="o2", demos=[demo("t/a", 2), demo("t/b", 0)])
    assert p1.startswith(b.instructions)
    # same demos in any retrieval order -> same prefix up to the current episode
    cut = p1.index("Goal: g\n")
    assert p1[:cut] == p2[:cut]
    assert p1.index("room t/a") < p1.index("room t/b")
    assert p1.endswith("Action:")


def test_bounds():
    b = PromptBuilder(history=2, obs_chars=50, history_obs_chars=20, max_demo_steps=2, max_demos=1)
    hist = [(f"obs{i} " + "x" * 100, f"act{i}") for i in range(10)]
    p = b.build(
        goal="g", observation="y" * 1000, history=hist, demos=[demo("a", 0, n=10), demo("b", 0)]
    )
    assert "act9" in p and "act8" in p and "act7" not in p
    assert "y" * 51 not in p
    assert p.count("move ") == 2 and "room b" not in p


def test_long_window_keeps_the_steps_around_its_best_hit():
    """A window longer than max_demo_steps keeps its best-matched step and what follows.

    It used to keep the first steps: a mapreader window matched at its last step
    ("put coin in box") lost that step, and the student never saw how the game ends.
    """
    b = PromptBuilder(max_demo_steps=4, max_demos=1)
    long = demo("t/a", 0, n=9)
    assert [s.action for s in long.kept(4)] == ["move 0", "move 1", "move 2", "move 3"]
    at_end = DemoView(goal=long.goal, task_id="t/a", first_idx=0, steps=long.steps, best=8)
    assert [s.action for s in at_end.kept(4)] == ["move 5", "move 6", "move 7", "move 8"]
    mid = DemoView(goal=long.goal, task_id="t/a", first_idx=0, steps=long.steps, best=3)
    assert [s.action for s in mid.kept(4)] == ["move 2", "move 3", "move 4", "move 5"]
    p = b.build(goal="g", observation="o", demos=[at_end])
    assert "move 8" in p and "move 4" not in p
    # from a memory window: best_idx is a step idx, positions count from its first step
    w = {"goal": "G", "task_id": "t/w", "best_idx": 17, "steps": [
        {"idx": 10 + i, "observation": f"o{i}", "action": f"a{i}"} for i in range(9)]}
    v = as_demo_view(w)
    assert v.best == 7 and [s.action for s in v.kept(4)] == ["a5", "a6", "a7", "a8"]


def test_valid_actions_not_listed_by_default_current_step_in_demo_format():
    b = PromptBuilder()
    p = b.build(goal="g", observation="o", valid_actions=["b", "a"], demos=[demo("t/a", 0)])
    assert "Valid actions" not in p
    # the current step is shaped exactly like a demo step: Observation line, Action line
    demo_lines = p.split("\n\n")[1].splitlines()
    cur_lines = p.split("\n\n")[-1].splitlines()
    assert [x.split(":")[0] for x in cur_lines] == [x.split(":")[0] for x in demo_lines[:3]]
    assert b.describe()["valid_actions_in"] == "none"


def test_valid_actions_listed_sorted_when_asked():
    p = PromptBuilder(valid_actions_in="current").build(
        goal="g", observation="o", valid_actions=["b", "a"]
    )
    assert "Valid actions: a, b\nAction:" in p


def test_valid_actions_in_both_lists_them_in_demo_steps_the_same_way():
    d = DemoView(goal="G", task_id="t", steps=(
        DemoStepView(observation="x", action="go", valid_actions=("go", "eat")),))
    p = PromptBuilder(valid_actions_in="both").build(
        goal="g", observation="o", valid_actions=["b", "a"], demos=[d]
    )
    assert "Observation: x\nValid actions: eat, go\nAction: go" in p
    assert "Observation: o\nValid actions: a, b\nAction:" in p


def test_teacher_builder_lists_valid_actions_and_bad_options_fail():
    from nightowl.errors import ConfigError

    t = PromptBuilder().for_teacher()
    assert "Valid actions: a" in t.build(goal="g", observation="o", valid_actions=["a"])
    with pytest.raises(ConfigError):
        PromptBuilder(valid_actions_in="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PromptBuilder(scoring="max")  # type: ignore[arg-type]


def test_content_free_prompt_shares_the_demo_prefix():
    b = PromptBuilder()
    ds = [demo("t/a", 0)]
    p = b.build(goal="find it", observation="a room", demos=ds)
    cf = b.content_free(ds)
    cut = p.rindex("\n\nGoal:")
    assert cf[:cut] == p[:cut]
    assert cf.endswith("Goal: N/A\nObservation: N/A\nAction:")


def test_duck_typed_windows():
    class S:
        def __init__(self, i):
            self.idx, self.observation, self.action = i, f"o{i}", f"a{i}"

    class W:
        goal, task_id, steps = "G", "t", [S(4), S(5)]

    v = as_demo_view(W())
    assert v.first_idx == 4 and v.steps[1].action == "a5"
    v2 = as_demo_view({"goal": "G", "task_id": "t", "steps": [{"obs": "x", "action": "y"}]})
    assert v2.steps[0].observation == "x"


def test_earlier_actions_list_what_the_history_steps_leave_out():
    hist = [(f"obs {i}", f"go to desk {i}") for i in range(7)]
    b = PromptBuilder(history=2, earlier_actions=3)
    p = b.build(goal="find a pen", observation="now", history=hist)
    assert "Earlier actions: go to desk 2; go to desk 3; go to desk 4\n" in p
    order = [p.index(s) for s in ("Earlier actions", "Observation: obs 5", "Action: go to desk 6")]
    assert order == sorted(order)
    # nothing left out, or the option off: no line
    assert "Earlier" not in b.build(goal="g", observation="o", history=hist[:2])
    assert "Earlier" not in PromptBuilder(history=2).build(goal="g", observation="o", history=hist)
    assert b.describe()["earlier_actions"] == 3
