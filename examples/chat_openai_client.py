"""Talk to `nightowl serve` with the official OpenAI client (and read the extension).

Run ``nightowl keys create me`` (prints a key once), ``nightowl serve --port 8000 &``,
then ``NIGHTOWL_KEY=no-... PYTHONPATH=. python examples/chat_openai_client.py``.
"""

from __future__ import annotations

import os

import openai


def main() -> None:
    """List models, one reply, one streamed reply in the same thread."""
    client = openai.OpenAI(
        base_url=os.environ.get("NIGHTOWL_URL", "http://127.0.0.1:8000/v1"),
        api_key=os.environ["NIGHTOWL_KEY"],
    )
    print([m.id for m in client.models.list().data])
    reply = client.chat.completions.create(
        model="nightowl-cascade",
        messages=[{"role": "user", "content": "What is 7 + 5?"}],
        max_tokens=48,
        extra_headers={"X-Nightowl-Thread": "example-thread"},
    )
    print(reply.choices[0].message.content)
    print("nightowl:", (reply.model_extra or {}).get("nightowl"))
    for chunk in client.chat.completions.create(
        model="nightowl-cascade",
        messages=[{"role": "user", "content": "And times 2?"}],
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Nightowl-Thread": "example-thread"},
    ):
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="")
    print()


if __name__ == "__main__":
    main()
