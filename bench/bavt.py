"""BAVT bench: exact match vs budget (BAVT vs same-budget majority vote), and BAVT as a
ladder tier (success and cost with vs without it).

Parts (``--part``):

- ``qa``: multihop QA, EM/F1 at low / mid / high budgets (tool calls and tokens), BAVT vs
  parallel sampling with majority vote, with the embedded model (SmolLM2-135M, CPU) or
  any OpenAI-compatible endpoint (``--base-url URL --model NAME``).
- ``scripted``: the same comparison with a *scripted* noisy-oracle model (proposes the
  gold next action with probability ``p``, a distractor otherwise; its critic judges gold
  steps as progress with accuracy ``q``). A sanity check of the algorithms, labelled as
  such; it says nothing about any real model.
- ``ladder``: episodes on the cloneable multihop env with the ladder student -> teacher
  (oracle) vs student -> BAVT -> teacher: success, teacher calls, tokens, cost.
- ``ladder-scripted``: the same with the scripted noisy-oracle model as student and BAVT.

Results print as rich tables and are written as JSON (``--out``).

    python bench/bavt.py --part scripted --part qa --questions 6
    python bench/bavt.py --part qa --base-url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import sys
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nightowl.agent.budget import Budget
from nightowl.agent.ladder import Ladder, StepContext
from nightowl.agent.search.baseline import MajorityVote, VoteConfig
from nightowl.agent.search.bavt import BavtConfig, BavtSearch, SearchResult
from nightowl.agent.search.space import SearchSpace, Step, format_demo
from nightowl.agent.search.tier import BavtTier
from nightowl.envs._multihop_kb import exact_match, f1_score
from nightowl.envs.multihop import MultiHopEnv, parse_action
from nightowl.llm.base import GenerationRequest, ModelBackend
from nightowl.llm.scripted import FunctionModel

console = Console(width=170)

#: budget tiers: (tool calls, tokens)
BUDGETS: dict[str, tuple[int, int]] = {"low": (3, 3000), "mid": (6, 6000), "high": (12, 12000)}
ENV_KW: dict[str, Any] = {"top_k": 2, "snippet_chars": 300, "max_steps": 12}


# --- shared ---------------------------------------------------------------------------
def demo_text(env: MultiHopEnv, task_id: str = "multihop/2hop/train/0") -> str:
    """One worked example from the train split (expert trajectory), prompt format."""
    obs = env.reset(task_id)
    steps: list[Step] = []
    while True:
        a = env.expert_action()
        if a is None:
            break
        r = env.step(a)
        steps.append(Step(action=a, observation="" if r.done else r.text))
        if r.done:
            break
    return "Example:\n" + format_demo(f"Goal: {obs.goal}", steps)


def task_ids(n: int, hops: list[int]) -> list[str]:
    """``n`` test questions, hops interleaved."""
    return [f"multihop/{hops[i % len(hops)]}hop/test/{20000 + i}" for i in range(n)]


def build_model(args: argparse.Namespace) -> ModelBackend:
    """The embedded model or an OpenAI-compatible endpoint."""
    if args.base_url:
        from nightowl.llm.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(
            name=args.model or "endpoint", base_url=args.base_url, model=args.model,
            api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
        )
    from nightowl.llm.registry import build_backend

    return build_backend("smollm2")


def prediction(res: SearchResult) -> str:
    """The answer text of a result ("" when it has none)."""
    if res.final is None:
        return ""
    parsed = parse_action(res.final)
    return parsed[1] if parsed else ""


# --- the scripted noisy oracle (sanity check only) ----------------------------------------
class NoisyOracle:
    """A scripted proposer + critic that knows the gold chain (for the sanity check).

    Proposals: the gold next action with probability ``p``, else a distractor (a search
    for a random entity or a wrong answer). Critic: says "better" for gold steps and
    "worse"/"same" for others, flipped with probability ``1 - q``. Deterministic per
    prompt and seed.
    """

    def __init__(self, env: MultiHopEnv, *, p: float = 0.35, q: float = 0.8, seed: int = 0):
        self.env = env
        self.p = p
        self.q = q
        self.seed = seed
        self.calls = 0

    def _gold(self) -> tuple[list[str], str, list[str]]:
        world = self.env._world
        q = self.env.question
        assert world is not None
        names = [world.name(e) for e in q.chain[:-1]]
        others = sorted(e.name for e in world.entities.values())
        return names, q.answer, others

    @staticmethod
    def _done(text: str) -> list[str]:
        return re.findall(r"^Action: (.+)$", text, re.M)

    def propose(self, req: GenerationRequest) -> str:
        self.calls += 1
        prompt = req.prompt or ""
        key = f"{self.seed}/{self.env.question.text}/{req.seed}/{self.calls}"
        rng = random.Random(zlib.crc32(key.encode()))
        names, answer, others = self._gold()
        own = prompt.split("Goal: ")[-1]  # this task's part (after the demo)
        seen = own.split("\n", 1)[1] if "\n" in own else ""  # observations, not the question
        done = {a.lower() for a in self._done(own)}
        # A fair reader: it can only name an entity it has read (the first one is in the
        # question); otherwise it guesses.
        known = [n for i, n in enumerate(names) if i == 0 or n in seen]
        nxt = next((f"search[{n}]" for n in known if f"search[{n}]".lower() not in done), None)
        if nxt is None and len(known) == len(names) and answer in seen:
            nxt = f"answer[{answer}]"
        if prompt.rstrip().endswith("answer["):
            ok = answer in seen and rng.random() < self.p + 0.3
            return (answer if ok else rng.choice(others)) + "]"
        if nxt is not None and rng.random() < self.p:
            return " " + nxt
        if rng.random() < 0.5:
            return f" search[{rng.choice(others)}]"
        return f" answer[{rng.choice(others)}]"

    def score(self, prompt: str, cont: str) -> float:
        names, answer, _ = self._gold()
        m = re.search(r"New step:\nAction: (.*)\n", prompt)
        action = (m.group(1) if m else "").strip().lower()
        good = action in {f"search[{n}]".lower() for n in names} | {f"answer[{answer}]".lower()}
        rng = random.Random(zlib.crc32(f"{self.seed}/{prompt}".encode()))
        if rng.random() > self.q:
            good = not good
        table = ({" better": -0.2, " solved": -1.5, " same": -2.5, " worse": -4.0} if good
                 else {" better": -3.0, " solved": -5.0, " same": -0.7, " worse": -1.2})
        return table[cont]

    def model(self) -> FunctionModel:
        return FunctionModel(self.propose, scores=self.score, name="noisy-oracle")


# --- part: QA EM vs budget ----------------------------------------------------------------
async def qa_part(
    model_factory: Any, ids: list[str], budgets: list[str], seed: int, label: str,
    max_depth: int,
) -> list[dict[str, Any]]:
    env = MultiHopEnv(**ENV_KW)
    demo = demo_text(env)
    rows: list[dict[str, Any]] = []
    for tier in budgets:
        tool_calls, tokens = BUDGETS[tier]
        for method in ("bavt", "vote"):
            for tid in ids:
                obs = env.reset(tid)
                model = model_factory(env)
                space = SearchSpace.from_env(env, goal=obs.goal, demos=demo, max_obs_chars=500)
                budget = Budget(tokens=tokens, tool_calls=tool_calls)
                t0 = time.perf_counter()
                if method == "bavt":
                    cfg = BavtConfig(seed=seed, max_depth=max_depth)
                    res = await BavtSearch(model, cfg).run(space, budget)
                else:
                    res = await MajorityVote(
                        model, VoteConfig(seed=seed, max_depth=max_depth)
                    ).run(space, budget)
                wall = time.perf_counter() - t0
                pred = prediction(res)
                gold = env.question.answer
                rows.append({
                    "label": label, "budget": tier, "method": method, "task_id": tid,
                    "prediction": pred, "gold": gold, "em": exact_match(pred, gold),
                    "f1": f1_score(pred, gold), "tokens": budget.used_of("tokens"),
                    "tool_calls": budget.used_of("tool_calls"), "reason": res.reason,
                    "forced": res.forced, "value": res.value, "wall_s": round(wall, 2),
                    "stats": res.stats,
                })
                console.log(f"[{label}] {tier} {method} {tid}: pred={pred!r} gold={gold!r} "
                            f"tokens={budget.used_of('tokens'):g} tools="
                            f"{budget.used_of('tool_calls'):g} {wall:.1f}s")
    return rows


def summarise_qa(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["label"], r["budget"], r["method"]) for r in rows},
                  key=lambda k: (k[0], list(BUDGETS).index(k[1]), k[2]))
    for label, tier, method in keys:
        rs = [r for r in rows if (r["label"], r["budget"], r["method"]) == (label, tier, method)]
        n = len(rs)
        out.append({
            "label": label, "budget": tier, "method": method, "n": n,
            "tool_call_limit": BUDGETS[tier][0], "token_limit": BUDGETS[tier][1],
            "em": sum(r["em"] for r in rs) / n, "f1": sum(r["f1"] for r in rs) / n,
            "mean_tokens": sum(r["tokens"] for r in rs) / n,
            "mean_tool_calls": sum(r["tool_calls"] for r in rs) / n,
            "answered": sum(1 for r in rs if r["prediction"]) / n,
            "mean_wall_s": sum(r["wall_s"] for r in rs) / n,
        })
    return out


def qa_table(summary: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for c in ("model", "budget (tools/tokens)", "method", "n", "EM", "F1", "answered",
              "tokens used", "tool calls used", "s/question"):
        t.add_column(c)
    for s in summary:
        t.add_row(s["label"], f"{s['budget']} ({s['tool_call_limit']}/{s['token_limit']})",
                  s["method"], str(s["n"]), f"{s['em']:.2f}", f"{s['f1']:.2f}",
                  f"{s['answered']:.2f}", f"{s['mean_tokens']:.0f}",
                  f"{s['mean_tool_calls']:.1f}", f"{s['mean_wall_s']:.1f}")
    return t


# --- part: ladder with vs without BAVT -----------------------------------------------------
async def ladder_part(
    student_factory: Any, ids: list[str], label: str, seed: int, step_tokens: int,
    step_tool_calls: int, max_steps: int,
) -> list[dict[str, Any]]:
    from nightowl.agent.acceptance import Unanimity
    from nightowl.agent.tiers import OracleTier, StudentTier
    from nightowl.config import Settings

    settings = Settings()
    student_prices = settings.model(settings.student_model).prices
    teacher_prices = settings.model(settings.teacher_price_model).prices
    env = MultiHopEnv(**ENV_KW)
    demo = demo_text(env)
    rows: list[dict[str, Any]] = []
    for variant in ("student->teacher", "student->bavt->teacher"):
        for tid in ids:
            obs = env.reset(tid)
            model = student_factory(env)
            tokenizer = model if _has_tokenizer(model) else _WordTokenizer()
            student = StudentTier(model, prices=student_prices, rule=Unanimity(3),
                                  temperature=0.7, max_tokens=24)
            teacher = OracleTier(ledger=None, prices=teacher_prices, tokenizer=tokenizer,
                                 output_tokens=settings.oracle_output_tokens)
            tiers: list[Any] = [student]
            if variant.endswith("bavt->teacher"):
                tiers.append(BavtTier(model, config=BavtConfig(seed=seed, max_depth=4),
                                      step_tokens=step_tokens, step_tool_calls=step_tool_calls,
                                      demos=demo, prices=student_prices, accept_value=0.6))
            tiers.append(teacher)
            ladder = Ladder(tiers, fallback="end")
            budget = Budget(steps=max_steps)
            history: list[tuple[str, str]] = []
            observation = ""
            won, steps, by_tier = False, 0, {"student": 0, "bavt": 0, "teacher": 0}
            cost = {"student": 0.0, "bavt": 0.0, "teacher": 0.0}
            tokens = {"student": 0, "bavt": 0, "teacher": 0}
            tool_calls_search = 0
            t0 = time.perf_counter()
            reason = "max_steps"
            while budget.can_afford(steps=1):
                ctx = StepContext(run_id="", episode_id="", task_id=tid, step=steps,
                                  goal=obs.goal, observation=observation,
                                  history=tuple(history[-3:]), budget=budget, env=env,
                                  env_name="multihop")
                out = await ladder.decide(ctx)
                for d in out.trail:
                    key = "teacher" if d.tier == "teacher" else d.tier
                    if key in cost:
                        cost[key] += d.cost_usd
                        tokens[key] += d.usage.prompt_tokens + d.usage.completion_tokens
                    if d.tier == "bavt":
                        tool_calls_search += int(d.meta.get("tool_calls", 0))
                if out.action is None:
                    reason = "all tiers escalated"
                    break
                by_tier[out.decision.tier if out.decision.tier in by_tier else "student"] += 1
                budget.charge(steps=1)
                steps += 1
                r = env.step(out.action)
                history.append((observation, out.action))
                observation = r.text
                if r.done:
                    won = r.won
                    reason = "won" if r.won else "done"
                    break
            rows.append({
                "label": label, "variant": variant, "task_id": tid, "won": won, "steps": steps,
                "acted_by": by_tier, "cost_usd": cost, "tokens": tokens,
                "total_cost_usd": sum(cost.values()), "search_tool_calls": tool_calls_search,
                "reason": reason, "wall_s": round(time.perf_counter() - t0, 2),
            })
            console.log(f"[{label}] {variant} {tid}: won={won} steps={steps} acted={by_tier} "
                        f"cost=${sum(cost.values()):.5f}")
    return rows


class _WordTokenizer:
    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _has_tokenizer(model: Any) -> bool:
    try:
        model.count_tokens("x")
    except NotImplementedError:
        return False
    return True


def summarise_ladder(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for label, variant in sorted({(r["label"], r["variant"]) for r in rows}):
        rs = [r for r in rows if (r["label"], r["variant"]) == (label, variant)]
        n = len(rs)
        acts = sum(sum(r["acted_by"].values()) for r in rs) or 1
        out.append({
            "label": label, "variant": variant, "n": n,
            "success": sum(r["won"] for r in rs) / n,
            "teacher_steps": sum(r["acted_by"]["teacher"] for r in rs) / n,
            "teacher_fraction": sum(r["acted_by"]["teacher"] for r in rs) / acts,
            "bavt_steps": sum(r["acted_by"]["bavt"] for r in rs) / n,
            "cost_per_episode": sum(r["total_cost_usd"] for r in rs) / n,
            "teacher_cost_per_episode": sum(r["cost_usd"]["teacher"] for r in rs) / n,
            "small_model_tokens": sum(r["tokens"]["student"] + r["tokens"]["bavt"] for r in rs) / n,
            "search_tool_calls": sum(r["search_tool_calls"] for r in rs) / n,
            "mean_wall_s": sum(r["wall_s"] for r in rs) / n,
        })
    return out


def ladder_table(summary: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for c in ("model", "ladder", "n", "success", "teacher steps/ep", "teacher share",
              "bavt steps/ep", "cost/ep USD", "small-model tokens/ep", "search tool calls/ep",
              "s/ep"):
        t.add_column(c)
    for s in summary:
        t.add_row(s["label"], s["variant"], str(s["n"]), f"{s['success']:.2f}",
                  f"{s['teacher_steps']:.2f}", f"{s['teacher_fraction']:.2f}",
                  f"{s['bavt_steps']:.2f}", f"{s['cost_per_episode']:.5f}",
                  f"{s['small_model_tokens']:.0f}", f"{s['search_tool_calls']:.1f}",
                  f"{s['mean_wall_s']:.1f}")
    return t


def markdown(results: dict[str, Any]) -> str:
    """Markdown tables of every summary in a results file (for docs)."""
    out: list[str] = []
    for key, part in results.items():
        if not isinstance(part, dict) or "summary" not in part:
            continue
        summ = part["summary"]
        out.append(f"**{key}**" + (f" ({part['note']})" if part.get("note") else "") + "\n")
        if key.startswith(("qa", "scripted_qa")):
            out.append("| budget (tools/tokens) | method | n | EM | F1 | answered | tokens | "
                       "tool calls | s/question |\n|---|---|---|---|---|---|---|---|---|")
            for s in summ:
                out.append(
                    f"| {s['budget']} ({s['tool_call_limit']}/{s['token_limit']}) | "
                    f"{s['method']} | {s['n']} | {s['em']:.2f} | {s['f1']:.2f} | "
                    f"{s['answered']:.2f} | {s['mean_tokens']:.0f} | "
                    f"{s['mean_tool_calls']:.1f} | {s['mean_wall_s']:.1f} |")
        else:
            out.append("| ladder | n | success | teacher steps/ep | teacher share | "
                       "bavt steps/ep | cost/ep USD | small-model tokens/ep | s/ep |\n"
                       "|---|---|---|---|---|---|---|---|---|")
            for s in summ:
                out.append(
                    f"| {s['variant']} | {s['n']} | {s['success']:.2f} | "
                    f"{s['teacher_steps']:.2f} | {s['teacher_fraction']:.2f} | "
                    f"{s['bavt_steps']:.2f} | {s['cost_per_episode']:.5f} | "
                    f"{s['small_model_tokens']:.0f} | {s['mean_wall_s']:.1f} |")
        out.append("")
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--part", action="append",
                    choices=["qa", "scripted", "ladder", "ladder-scripted"])
    ap.add_argument("--questions", type=int, default=6, help="real-model questions")
    ap.add_argument("--scripted-questions", type=int, default=30)
    ap.add_argument("--hops", default="2,3")
    ap.add_argument("--budgets", default="low,mid,high")
    ap.add_argument("--episodes", type=int, default=4, help="real-model ladder episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p", type=float, default=0.35,
                    help="scripted model: probability of proposing the gold next action")
    ap.add_argument("--q", type=float, action="append",
                    help="scripted model: critic accuracy (repeatable; default 0.8 and 0.95)")
    ap.add_argument("--ladder-step-tokens", type=int, default=3000,
                    help="BAVT tier budget per decision (tokens)")
    ap.add_argument("--ladder-step-tools", type=int, default=6,
                    help="BAVT tier budget per decision (tool calls)")
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint")
    ap.add_argument("--model", default=None, help="model name at the endpoint")
    ap.add_argument("--api-key-env", default=None)
    ap.add_argument("--out", default="bench/results/bavt.json")
    ap.add_argument("--markdown", metavar="JSON", help="print markdown tables of a results file")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    parts = args.part or ["scripted", "ladder-scripted", "qa", "ladder"]
    hops = [int(h) for h in args.hops.split(",")]
    budgets = args.budgets.split(",")
    results: dict[str, Any] = {
        "config": {"budgets": BUDGETS, "env": ENV_KW, "hops": hops, "seed": args.seed,
                   "parts": parts, "bavt": asdict(BavtConfig()), "vote": asdict(VoteConfig())},
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "threads": os.environ.get("NIGHTOWL_THREADS")},
    }
    out_path = Path(args.out)
    if out_path.exists():
        try:
            previous = json.loads(out_path.read_text())
            results = {**previous, **results}
        except json.JSONDecodeError:
            pass
    real_label = args.model or ("endpoint" if args.base_url else "smollm2-135m")

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1, default=str))

    for q in args.q or [0.8, 0.95]:
        label = f"SCRIPTED noisy oracle p={args.p} q={q}"

        def scripted(env: MultiHopEnv, q: float = q) -> ModelBackend:
            return NoisyOracle(env, p=args.p, q=q, seed=args.seed).model()

        if "scripted" in parts:
            ids = task_ids(args.scripted_questions, hops)
            rows = asyncio.run(qa_part(scripted, ids, budgets, args.seed, label, 4))
            summ = summarise_qa(rows)
            results[f"scripted_qa:q={q}"] = {
                "summary": summ, "rows": rows,
                "note": "scripted noisy-oracle model: sanity check only"}
            console.print(qa_table(summ, "SANITY CHECK (scripted noisy-oracle model, not a "
                                         "real model): EM vs budget"))
            save()
        if "ladder-scripted" in parts:
            ids = task_ids(args.scripted_questions, hops)
            rows = asyncio.run(ladder_part(scripted, ids, label, args.seed,
                                           args.ladder_step_tokens, args.ladder_step_tools, 10))
            summ = summarise_ladder(rows)
            results[f"scripted_ladder:q={q}"] = {
                "summary": summ, "rows": rows,
                "note": "scripted noisy-oracle student: sanity check only"}
            console.print(ladder_table(summ, "SANITY CHECK (scripted student): ladder with vs "
                                             "without BAVT"))
            save()
    if "qa" in parts:
        model = build_model(args)
        ids = task_ids(args.questions, hops)
        rows = asyncio.run(qa_part(lambda env: model, ids, budgets, args.seed, real_label, 4))
        summ = summarise_qa(rows)
        results[f"qa:{real_label}"] = {"summary": summ, "rows": rows}
        console.print(qa_table(summ, f"{real_label}: EM vs budget, BAVT vs majority vote"))
        save()
    if "ladder" in parts:
        model = build_model(args)
        ids = task_ids(args.episodes, hops)
        rows = asyncio.run(ladder_part(lambda env: model, ids, real_label, args.seed,
                                       args.ladder_step_tokens, args.ladder_step_tools, 10))
        summ = summarise_ladder(rows)
        results[f"ladder:{real_label}"] = {"summary": summ, "rows": rows}
        console.print(ladder_table(summ, f"{real_label}: ladder with vs without BAVT"))
        save()
    console.print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
