"""Scripted OpenAI-protocol servers that serve ONE endpoint each (protocol-mapping tests).

    python -m tests.llm.scripted_openai_server --api chat|completions --port N

Not a model: replies are scripted so tests can see exactly what the client sent.

- ``chat``: only ``POST /v1/chat/completions`` (like a hosted chat model). Ignores ``n``,
  ``logprobs`` and every constraint field (a server without those features). Reply: a
  canned answer when the last user message contains a key of `CANNED`, else a JSON
  reflection ``{"call": k, "messages": [...]}`` of what it received.
- ``completions``: only ``POST /v1/completions``. Honours ``n`` and ``logprobs``, answers
  ``echo`` with prompt logprobs and text offsets, reports ``cached_tokens`` as the words
  shared with the previous prompt (a scripted prefix cache), ignores constraints. Reply:
  JSON ``{"call": k, "prompt": ..., "stop": ...}``. Scripted logprob of a word: -0.1 if it is
  in `LIKELY`, else -2.0.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

CANNED = {
    "capital of France": "Hmm, I would say paris.",
    "Give JSON": 'Sure! Here it is: {"answer": 42, "ok": true} -- hope that helps',
}
LIKELY = {"Paris", "north"}
_WORD = re.compile(r"\s*\S+")


def _words(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in _WORD.finditer(text)]


def _logprob(token: str) -> float:
    return -0.1 if token.strip() in LIKELY else -2.0


def create_app(api: str) -> FastAPI:
    app = FastAPI()
    state: dict[str, Any] = {"calls": 0, "last_prompt": ""}

    if api == "chat":

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict[str, Any]:
            body = await request.json()
            state["calls"] += 1
            messages = body["messages"]
            last = messages[-1]["content"] if messages else ""
            reply = next((v for k, v in CANNED.items() if k in last), None)
            if reply is None:
                reply = json.dumps({"call": state["calls"], "messages": messages})
            prompt_words = sum(len(_words(m["content"])) for m in messages)
            return {
                "id": f"chat-{state['calls']}",
                "object": "chat.completion",
                "model": body.get("model", "scripted"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_words,
                    "completion_tokens": len(_words(reply)),
                    "total_tokens": prompt_words + len(_words(reply)),
                },
            }

    else:

        @app.post("/v1/completions")
        async def completions(request: Request) -> dict[str, Any]:
            body = await request.json()
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = []
            prompt_tokens = cached = completion_tokens = 0
            for prompt in prompts:
                words = _words(prompt)
                prev = _words(state["last_prompt"])
                shared = 0
                while shared < min(len(words), len(prev)) and words[shared] == prev[shared]:
                    shared += 1
                state["last_prompt"] = prompt
                prompt_tokens += len(words)
                cached += shared
                for _ in range(int(body.get("n", 1))):
                    state["calls"] += 1
                    if body.get("echo"):
                        text, toks = prompt, words
                    else:
                        text = json.dumps(
                            {"call": state["calls"], "prompt": prompt, "stop": body.get("stop")}
                        )
                        toks = _words(text)
                    completion_tokens += 0 if body.get("echo") else len(toks)
                    logprobs = None
                    if body.get("logprobs") is not None:
                        logprobs = {
                            "tokens": [t for _, t in toks],
                            "token_logprobs": [_logprob(t) for _, t in toks],
                            "text_offset": [o for o, _ in toks],
                            "top_logprobs": None,
                        }
                    choices.append(
                        {
                            "index": len(choices),
                            "text": text,
                            "logprobs": logprobs,
                            "finish_reason": "length" if body.get("echo") else "stop",
                        }
                    )
            return {
                "id": f"cmpl-{state['calls']}",
                "object": "text_completion",
                "model": body.get("model", "scripted"),
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": cached},
                },
            }

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", choices=["chat", "completions"], required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.api), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
