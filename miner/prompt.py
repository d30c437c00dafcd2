"""How a job becomes the request to the model server: the `messages` list and the sampling the
job asks for. Kept tiny on purpose: the exact rule (system message, dedupe of the current
prompt) is part of the backend contract."""

from __future__ import annotations

from typing import Any

from miner.model import PASSED_THROUGH, Sampling

Message = dict[str, str]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def job_sampling(job: dict[str, Any]) -> Sampling:
    """The temperature, top_p, seed and stop strings the job asks for (null or missing, as
    from a backend that predates them: the miner's and the model server's defaults).

    Passed through as they are: a job that asks for temperature 0 (greedy) or a seed is one the
    network can re-run on another miner to check the answer (issue 18), and an honest miner's
    answer then matches; the miner's own --temperature applies only where the job says nothing."""
    seed = job.get("seed")
    stop = job.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    stops = tuple(s for s in stop if isinstance(s, str) and s) if isinstance(stop, list) else ()
    return Sampling(
        temperature=_number(job.get("temperature")),
        top_p=_number(job.get("top_p")),
        stop=stops or None,
        extra=tuple((k, job[k]) for k in PASSED_THROUGH if job.get(k) is not None),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
    )


def build_messages(job: dict[str, Any]) -> list[Message]:
    """[system from `context` if non-empty] + history + [current user prompt]; or, for a
    conversation with tool calls, the whole conversation the backend hands out (`messages`).

    The backend's history may already end with the current user prompt; it is not repeated.
    """
    whole = job.get("messages")
    if isinstance(whole, list) and whole and all(isinstance(m, dict) for m in whole):
        return whole
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
