"""Chat assistants: a cascade over student samples, tenant demos, per-thread sleep-time.

`Assistant` is the Python API (``await chat(...)``, ``stream(...)``, sync wrappers);
`nightowl.server` serves it over the OpenAI protocol. See docs/chat.md.
"""

from nightowl.chat._keys import ApiKey, KeyStore
from nightowl.chat.agreement import Agreement, extract_answer, measure_agreement
from nightowl.chat.assistant import Assistant, AssistantConfig, ChatReply, ChatStream
from nightowl.chat.cascade import ChatCascade, DevPoint, TauChoice, calibrate_tau, evaluate_tau
from nightowl.chat.demos import ChatDemos, TenantDemoStore
from nightowl.chat.threads import ThreadStore

__all__ = [
    "Agreement",
    "ApiKey",
    "Assistant",
    "AssistantConfig",
    "ChatCascade",
    "ChatDemos",
    "ChatReply",
    "ChatStream",
    "DevPoint",
    "KeyStore",
    "TauChoice",
    "TenantDemoStore",
    "ThreadStore",
    "calibrate_tau",
    "evaluate_tau",
    "extract_answer",
    "measure_agreement",
]
