"""The prompt a tier sees for one turn: system text, demos, learned context, messages.

Without a learned context the whole history is sent. With c' valid up to revision r the
prompt is the system text with c' plus the messages after r. Retrieved demos of the
same tenant are shown in the system text as worked examples. Oldest messages are
dropped when the prompt would not fit ``max_prompt_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nightowl.chat.threads import LearnedThreadContext
from nightowl.llm.base import ChatMessage, PromptTooLongError
from nightowl.memory import DemoWindow

DEFAULT_SYSTEM = (
    "You are a helpful assistant. Answer the user's last message. When the question has "
    "a short answer (a number, a name, yes/no, a choice), end with 'The answer is X.'"
)
#: characters of a demo's context shown in the prompt
DEMO_CONTEXT_CHARS = 400


def build_messages(
    history: Sequence[ChatMessage],
    *,
    system: str = DEFAULT_SYSTEM,
    client_system: str = "",
    demos: Sequence[DemoWindow] = (),
    learned: LearnedThreadContext | None = None,
    count_tokens: Callable[[str], int] | None = None,
    max_prompt_tokens: int | None = None,
) -> tuple[ChatMessage, ...]:
    """The chat messages for a tier (a leading system message, then the conversation)."""
    parts = [client_system.strip() or system]
    if demos:
        shots = []
        for d in demos:  # a chat demo: goal = question, step 0 = (context, reply)
            context, reply = d.steps[0].observation, d.steps[0].action
            ctx = f"Context: {context[-DEMO_CONTEXT_CHARS:]}\n" if context else ""
            shots.append(f"{ctx}Q: {d.goal}\nA: {reply}")
        parts.append("Worked examples of similar questions:\n\n" + "\n\n".join(shots))
    recent = list(history)
    if learned is not None and learned.revision < len(history):
        parts.append(
            "Notes about the conversation so far (it is summarised here, not repeated):\n"
            + learned.text
        )
        recent = list(history[learned.revision :])
    system_msg = ChatMessage(role="system", content="\n\n".join(parts))
    if count_tokens is not None and max_prompt_tokens is not None:
        budget = max_prompt_tokens - count_tokens(system_msg.content)
        sizes = [count_tokens(m.content) + 4 for m in recent]
        while len(recent) > 1 and sum(sizes) > budget:
            recent.pop(0)
            sizes.pop(0)
        if sum(sizes) > budget:
            raise PromptTooLongError(
                f"the last message has ~{sizes[-1]} tokens; the prompt limit is "
                f"{max_prompt_tokens} tokens"
            )
    return (system_msg, *recent)
