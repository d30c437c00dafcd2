"""How a job becomes the `messages` list sent to the model server. Kept tiny on purpose: the
exact rule (system message, dedupe of the current prompt) is part of the backend contract."""

from __future__ import annotations

from typing import Any

Message = dict[str, str]


def build_messages(job: dict[str, Any]) -> list[Message]:
    """[system from `context` if non-empty] + history + [current user prompt].

    The backend's history may already end with the current user prompt; it is not repeated.
    """
    prompt = str(job.get("prompt") or "")
    messages: list[Message] = []
    context = job.get("context")
    if isinstance(context, str) and context.strip():
        messages.append({"role": "system", "content": context})
    for item in job.get("history") or []:
        role = item.get("role")
        if role in ("user", "assistant") and isinstance(item.get("content"), str):
            messages.append({"role": role, "content": item["content"]})
    last = messages[-1] if messages else None
    if not (last and last["role"] == "user" and last["content"] == prompt):
        messages.append({"role": "user", "content": prompt})
    return merge_consecutive(messages)


def merge_consecutive(messages: list[Message]) -> list[Message]:
    """Join back-to-back turns of the same role (e.g. an earlier question that was never
    answered, then the current one): many chat templates require user/assistant alternation."""
    out: list[Message] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] and m["role"] != "system":
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return out


def strict_alternation(messages: list[Message]) -> list[Message]:
    """For chat templates that reject a system role and require user/assistant alternation
    starting with user (Mixtral-Instruct's does): fold the system text into the first user turn
    and merge consecutive turns of the same role."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = merge_consecutive([m for m in messages if m["role"] != "system"])
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": ""})
    if system:
        first = out[0]["content"]
        out[0] = {"role": "user", "content": system + ("\n\n" + first if first else "")}
    return out
