"""Budget-aware value tree search (BAVT).

After "Spend Less, Reason Better: Budget-Aware Value Tree Search for LLM Agents" (2026).
Multi-step reasoning is a tree of partial trajectories:

1. **select** a frontier node with probability proportional to ``V(n) ** (1 / r)``, where
   ``r`` is the remaining budget ratio (the scarcest of tokens and tool calls governs):
   at ``r = 1`` selection is proportional to value (broad exploration); as ``r -> 0`` the
   exponent grows and selection becomes greedy, with no tuning parameter;
2. **expand**: the model proposes ``k`` next actions (tool calls or a final answer) from
   the node's path, with the budget (remaining / used) shown in its prompt;
3. **execute** each tool call on a restored snapshot of the node (final answers are not
   executed: they are terminal nodes);
4. **score** with the *residual* critic: the progress ``delta`` a step made relative to
   its parent, so ``V(child) = clip(V(parent) + delta)``; steps that are invalid,
   redundant (an observation already on the path, a state already in the tree) or make
   no progress (``delta <= prune_delta``) are pruned;
5. **stop** at a terminal whose value reaches ``confident``, or when the budget cannot
   pay for another expansion, returning the best terminal, else (optionally forcing one
   answer from the best node) the best-valued partial path.

Budgets are hard: every model call is bounded (`step_budget`) and checked with
`Budget.can_afford` before it is made, every tool call likewise. Selection and sampling
seeds come from one `random.Random(seed)`, so a search is deterministic under a seed
for deterministic backends. The ladder tier lives in `tier`, the majority-vote
baseline in `baseline`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nightowl.agent.budget import TOKENS, TOOL_CALLS, Budget
from nightowl.agent.search._tree import (
    Node,
    SearchTree,
    clip_value,
    selection_probs,
    weighted_choice,
)
from nightowl.agent.search.critic import CriticMode, CriticVerdict, ResidualCritic
from nightowl.agent.search.space import SearchSpace, Step, action_key
from nightowl.agent.search.step_budget import CallMeter, budget_line, generation_bound
from nightowl.errors import ModelError
from nightowl.llm.base import GenerationRequest, GenerationResult, ModelBackend, Usage

__all__ = ["BavtConfig", "BavtSearch", "SearchResult", "ToolCallHook", "selection_probs",
           "weighted_choice"]

#: ``(action, latency_s, meta)`` -> None; e.g. a partial of `Ledger.record_tool_call`
ToolCallHook = Callable[[str, float, dict[str, Any]], None]


@dataclass(kw_only=True)
class BavtConfig:
    """Search settings (the selection rule itself has no parameter).

    Attributes:
        proposals: actions sampled per expansion (one batched call).
        temperature: sampling temperature for proposals.
        max_action_tokens: generation cap per proposal.
        max_answer_tokens: generation cap for a forced final answer.
        critic: "auto" (scoring when the backend supports it), "score" or "generate".
        v_root: value of the root.
        confident: a terminal at or above this value ends the search.
        prune_delta: children with ``delta <= prune_delta`` are pruned (non-progress).
        max_depth: steps below the root.
        max_expansions: times one node may be expanded.
        force_answer: when the search ends without a terminal, force one final answer
            from the best node (if the space has an answer action and budget is left).
        seed: seeds selection and sampling.
        max_consecutive_errors: model failures in a row before the search gives up.
    """

    proposals: int = 3
    temperature: float = 0.8
    max_action_tokens: int = 24
    max_answer_tokens: int = 16
    critic: CriticMode = "auto"
    v_root: float = 0.5
    confident: float = 0.85
    prune_delta: float = 0.0
    max_depth: int = 6
    max_expansions: int = 4
    force_answer: bool = True
    seed: int = 0
    max_consecutive_errors: int = 3


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """What a search (or the baseline) returns.

    Attributes:
        actions: the chosen path's actions from the root (last one final if terminal).
        final: the final action (e.g. ``answer[...]``), or None for a partial path.
        value: the chosen node's value (vote share for the baseline).
        terminal: whether the path ends in a final action / finished episode.
        reason: why the search stopped: "confident", "budget", "exhausted", "model_error".
        forced: the final action was forced from the best partial node at the end.
        usage: tokens of every model call.
        tool_calls: environment steps executed.
        budget: the budget's ``to_dict()`` at the end.
        stats: counters (expansions, pruned by reason, malformed proposals/critic...).
        trace: the tree's nodes (BAVT) or rollouts (baseline).
    """

    actions: tuple[str, ...]
    final: str | None
    value: float
    terminal: bool
    reason: str
    forced: bool = False
    usage: Usage = field(default_factory=Usage)
    tool_calls: int = 0
    budget: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def first_action(self) -> str | None:
        """The next action to take from the root."""
        return self.actions[0] if self.actions else None


class BavtSearch:
    """Budget-aware value tree search with a residual critic.

    Args:
        model: proposes actions (the student or a mid-size model, through the ledger).
        config: search settings.
        critic_model: scores steps (defaults to ``model``: the same model is the critic).
        on_tool_call: called after every environment step (the ledger's tool calls).
    """

    def __init__(
        self,
        model: ModelBackend,
        config: BavtConfig | None = None,
        *,
        critic_model: ModelBackend | None = None,
        on_tool_call: ToolCallHook | None = None,
    ) -> None:
        self.config = config or BavtConfig()
        self.model = model
        self.critic = ResidualCritic(critic_model or model, mode=self.config.critic)
        self.on_tool_call = on_tool_call

    async def run(self, space: SearchSpace, budget: Budget) -> SearchResult:
        """Search from the space's root within ``budget``; the env is restored afterwards."""
        try:
            tree = SearchTree.start(space, self.config.v_root)
            meter = CallMeter(self.model)
            reason = await self._search(space, budget, tree, meter)
            return await self._conclude(space, budget, tree, meter, reason)
        finally:
            space.restore_root()

    # --- the loop: select, propose, expand until a stop reason --------------------------
    async def _search(
        self, space: SearchSpace, budget: Budget, tree: SearchTree, meter: CallMeter
    ) -> str:
        """Expand the tree until it stops; returns why it stopped."""
        cfg = self.config
        rng = random.Random(cfg.seed)
        errors = 0
        while True:
            reason = self._stop_reason(tree, errors)
            if reason is not None:
                return reason
            node = tree.select(rng, budget.remaining_ratio())
            node_path = tree.path(node)
            request = GenerationRequest(  # the batched proposal call for expanding ``node``
                prompt=space.prompt(node_path, budget_line(budget), node.valid_actions),
                n=cfg.proposals, max_tokens=cfg.max_action_tokens,
                temperature=cfg.temperature, stop=("\n",), seed=rng.randrange(2**31),
            )
            if not budget.can_afford(**{TOKENS: self._reserve(space, request, tree)}):
                return "budget"
            res = await meter.call(budget, request)
            if res is None:
                return "budget"
            if isinstance(res, ModelError):
                # The node stays in the frontier; repeated failures end the search.
                errors += 1
                tree.stats["model_errors"] += 1
                continue
            errors = 0
            await self._expand(space, budget, tree, node, node_path, res)
            if budget.remaining(TOOL_CALLS) < 1 and space.answer_prefix is None:
                return "budget"  # nothing left to execute and no answer action

    def _stop_reason(self, tree: SearchTree, errors: int) -> str | None:
        """Why the search must stop now, or None to go on."""
        best = tree.best_terminal()
        if best is not None and best.value >= self.config.confident:
            return "confident"
        if not tree.frontier:
            return "exhausted"
        if errors >= self.config.max_consecutive_errors:
            return "model_error"
        return None

    async def _expand(
        self, space: SearchSpace, budget: Budget, tree: SearchTree, node: Node,
        node_path: list[Step], res: GenerationResult,
    ) -> None:
        """Turn the proposals for ``node`` into (executed, judged) children."""
        cfg = self.config
        node.expansions += 1
        if node.expansions >= cfg.max_expansions or node.depth >= cfg.max_depth:
            tree.frontier.remove(node.id)
        tree.stats["expansions"] += 1
        seen_here = tree.child_keys(node)
        for text in res.texts:
            action = space.parse(text, node.valid_actions)
            if action is None:
                tree.stats["malformed_proposals"] += 1
                continue
            key = action_key(action)
            if key in seen_here:
                tree.stats["duplicate_proposals"] += 1
                continue
            seen_here.add(key)
            child = await self._expand_one(space, budget, tree, node, node_path, action)
            if child is not None:
                tree.add_child(node, child, cfg.max_depth)

    # --- the end: pick (or force) the answer -------------------------------------------
    async def _conclude(
        self, space: SearchSpace, budget: Budget, tree: SearchTree, meter: CallMeter,
        reason: str,
    ) -> SearchResult:
        """The best terminal (forcing one answer when worthwhile), else the best path."""
        best_t = tree.best_terminal()
        best_p = tree.best_partial() or tree.root
        forced = False
        # No confident terminal: if the best partial path is worth more than the best
        # terminal, force one final answer from it (question answering has no other way
        # to turn a partial path into an answer).
        if (
            self.config.force_answer
            and reason != "confident"
            and space.answer_prefix is not None
            and (best_t is None or best_p.value > best_t.value)
        ):
            forced_node = await self._force_answer(space, budget, meter, tree, best_p)
            if forced_node is not None:
                tree.nodes.append(forced_node)
                tree.terminals.append(forced_node.id)
                best_t, forced = forced_node, True
        chosen, terminal = (best_t, True) if best_t is not None else (best_p, False)
        steps = tree.path(chosen)
        is_final = terminal and bool(steps) and space.is_final(steps[-1].action)
        tree.stats["nodes"] = len(tree.nodes)
        tree.stats["terminals"] = len(tree.terminals)
        return SearchResult(
            actions=tuple(s.action for s in steps),
            final=steps[-1].action if is_final else None,
            value=chosen.value,
            terminal=terminal,
            reason=reason,
            forced=forced,
            usage=sum(tree.critic_usage, meter.usage),
            tool_calls=int(tree.stats["tool_calls"]),
            budget=budget.to_dict(),
            stats=dict(tree.stats),
            trace=[n.to_dict() for n in tree.nodes],
        )

    def _reserve(self, space: SearchSpace, request: GenerationRequest, tree: SearchTree) -> int:
        """Tokens an expansion needs before it may start.

        Its proposal call, plus — while there is no answer yet and answers can be
        forced — one forced answer from the best partial node, so that the search does
        not spend the tokens its final answer needs.
        """
        cfg = self.config
        need = generation_bound(self.model, request.prompt or "", n=request.n,
                                max_tokens=request.max_tokens)
        if cfg.force_answer and space.answer_prefix is not None and tree.best_terminal() is None:
            best = tree.best_partial()
            if best is not None:
                text = space.prompt(tree.path(best), "Budget: " + "x" * 80, best.valid_actions)
                need += generation_bound(self.model, f"{text} {space.answer_prefix}", n=1,
                                         max_tokens=cfg.max_answer_tokens)
        return need

    async def _expand_one(
        self, space: SearchSpace, budget: Budget, tree: SearchTree, parent: Node,
        parent_path: list[Step], action: str,
    ) -> Node | None:
        """One child of ``parent``: a judged final answer, or an executed, judged step."""
        if space.is_final(action):
            return await self._answer_child(space, budget, tree, parent, parent_path, action)
        cfg = self.config
        stats = tree.stats
        key = space.state_key([s.action for s in parent_path] + [action])
        if key in tree.states:
            stats["pruned_duplicate_state"] += 1
            return None
        if not budget.can_afford(**{TOOL_CALLS: 1}):
            stats["skipped_no_tool_budget"] += 1
            return None
        budget.charge(**{TOOL_CALLS: 1})
        stats["tool_calls"] += 1
        t0 = time.perf_counter()
        result, snap = space.execute(parent.snapshot, action)
        if self.on_tool_call is not None:
            self.on_tool_call(action, time.perf_counter() - t0, {"budget": budget.to_dict()})
        tree.states.add(key)
        step = Step(action=action, observation=result.text)
        node = Node(
            id=tree.next_id, parent=parent.id, step=step, snapshot=snap, value=parent.value,
            depth=parent.depth + 1, valid_actions=result.valid_actions or parent.valid_actions,
        )
        if result.invalid:
            node.pruned = "invalid"
            stats["pruned_invalid"] += 1
            return node
        if result.done:
            node.terminal = True
            node.won = result.won
            if result.won:
                node.value, node.delta = 1.0, 1.0 - parent.value
            else:
                node.value, node.pruned = 0.0, "lost"
                stats["pruned_lost"] += 1
            return node
        obs_key = " ".join(result.text.lower().split())
        if any(" ".join(s.observation.lower().split()) == obs_key for s in parent_path):
            node.pruned = "redundant"
            stats["pruned_redundant"] += 1
            return node
        verdict = await self._judge(space, budget, tree, parent_path, step)
        node.delta = verdict.delta
        node.value = clip_value(parent.value + verdict.delta)
        node.critic = _critic_meta(verdict)
        if verdict.delta <= cfg.prune_delta:
            node.pruned = "no_progress"
            stats["pruned_no_progress"] += 1
        return node

    async def _answer_child(
        self, space: SearchSpace, budget: Budget, tree: SearchTree, parent: Node,
        parent_path: list[Step], action: str,
    ) -> Node:
        """A final answer proposed below ``parent``, valued by the critic."""
        step = Step(action=action, observation=f"Final answer: {action}")
        verdict = await self._judge(space, budget, tree, parent_path, step)
        node = Node(
            id=tree.next_id, parent=parent.id, step=step, snapshot=parent.snapshot,
            value=clip_value(parent.value + verdict.delta), delta=verdict.delta,
            depth=parent.depth + 1, terminal=True, critic=_critic_meta(verdict),
        )
        # An answer the critic does not see as progress is pruned like any other
        # non-progress step: otherwise a wrong answer after good evidence inherits
        # its parent's high value and passes the confident bar.
        if verdict.delta <= self.config.prune_delta:
            node.pruned = "no_progress"
            tree.stats["pruned_no_progress_answer"] += 1
        return node

    async def _judge(
        self, space: SearchSpace, budget: Budget, tree: SearchTree, parent_path: list[Step],
        step: Step,
    ) -> CriticVerdict:
        verdict = await self.critic.judge(space.critic_prompt(parent_path, step), budget)
        tree.critic_usage.append(verdict.usage)
        tree.stats["critic_calls"] += 1
        if verdict.status != "ok":
            tree.stats[f"critic_{verdict.status}"] += 1
        return verdict

    async def _force_answer(
        self, space: SearchSpace, budget: Budget, meter: CallMeter, tree: SearchTree,
        node: Node,
    ) -> Node | None:
        cfg = self.config
        prompt = space.prompt(tree.path(node), budget_line(budget), node.valid_actions)
        res = await meter.call(budget, GenerationRequest(
            prompt=f"{prompt} {space.answer_prefix}", n=1, max_tokens=cfg.max_answer_tokens,
            temperature=0.0, stop=("\n", space.answer_suffix or "\n"), seed=cfg.seed,
        ))
        action = (space.make_answer(res.completions[0].text)
                  if res is not None and not isinstance(res, ModelError) and res.completions
                  else None)
        if action is None:
            tree.stats["forced_answer_failed"] += 1
            return None
        tree.stats["forced_answers"] += 1
        return Node(
            id=tree.next_id, parent=node.id, step=Step(action=action, observation=""),
            snapshot=node.snapshot, value=node.value, depth=node.depth + 1, terminal=True,
        )


def _critic_meta(verdict: CriticVerdict) -> dict[str, Any]:
    return {"status": verdict.status, "raw": verdict.raw}
