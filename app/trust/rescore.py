"""Re-scoring: the check for answers sampled at temperature > 0, which another miner cannot
reproduce. The claimed answer is scored by the model it claims to come from, in one prefill on
a server the operator runs (RESCORE_URL, OpenAI-compatible; vLLM does it):

    POST {RESCORE_URL}/completions
    {"model", "prompt": <the conversation in the chat template> + <the answer> + <end of turn>,
     "echo": true, "logprobs": RESCORE_TOP_K, "max_tokens": 1, "temperature": 0}

vLLM answers `echo` + `logprobs` on /v1/completions with the prompt's own tokens, each with its
log-probability and the top-k alternatives (`choices[0].logprobs`: tokens, token_logprobs,
top_logprobs, text_offset; the first token has none). Its `prompt_logprobs` parameter gives the
same numbers in another shape, and not through every client, so the legacy `echo` form is used.
vLLM refuses `max_tokens: 0` (the forward pass makes one token anyway), hence 1, ignored here.

The answer's tokens are those whose characters fall inside the answer (text_offset). It fails
if their mean log-probability is below RESCORE_MIN_MEAN_LOGPROB, or more than
RESCORE_MAX_OUTSIDE_TOP_K of them are outside the model's top RESCORE_TOP_K (canned text,
another model's words), or the model gives the end of its turn right after the answer a
log-probability below RESCORE_MIN_END_LOGPROB (an answer cut short; not judged when the job
stopped at max_tokens). The prompt is in ChatML (<|im_start|>role ... <|im_end|>), the template
of Qwen and many others: a model with another template scores a little lower on every answer,
so its thresholds want setting from its own honest answers.

It runs after the answer's commit, off the request: `schedule` starts a task per sampled job,
at most RESCORE_CONCURRENCY at once per process (more are skipped, never queued), each bounded
by RESCORE_TIMEOUT_S; an error or a timeout is logged and the check skipped. The business's
answer never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from app.context import AppContext
from app.models import ChatJob, JobStatus, utcnow
from app.trust import checkjobs, reputation
from app.trust.compare import Verdict

log = logging.getLogger(__name__)
START, END = "<|im_start|>", "<|im_end|>"
ROUTE_SEP = "#"  # a /v1 job's model may carry its capability route (app/leases/served.py)
_STRUCTURED = ("tools", "response_format", "messages")  # answers this check does not score


class RescoreError(Exception):
    """The scoring server's answer could not be used (logged; the check is skipped)."""


@dataclass(frozen=True)
class Score:
    tokens: int  # the answer's tokens
    mean_logprob: float
    outside_top_k: float  # share of the answer's tokens outside the top k
    end_logprob: float | None  # of the end of turn right after the answer (None: not given)


@dataclass(frozen=True)
class Rescored(Verdict):
    detail: str = ""  # why it failed; similarity is the answer's mean token probability


def chat_prompt(messages: Sequence[dict[str, str]]) -> str:
    """The conversation in ChatML, up to where the assistant's answer starts."""
    turns = "".join(f"{START}{m['role']}\n{m['content']}{END}\n" for m in messages)
    return f"{turns}{START}assistant\n"


def conversation(context: str | None, history: Sequence[tuple[str, str]],
                 prompt: str) -> list[dict[str, str]]:
    """The messages a miner sends its model for a job (miner/prompt.py build_messages): the
    context as a system message, the history, the prompt (unless the history ends with it),
    consecutive turns of one role merged."""
    messages = [{"role": "system", "content": context}] if context and context.strip() else []
    messages += [{"role": r, "content": t} for r, t in history if r in ("user", "assistant")]
    if not (messages and messages[-1] == {"role": "user", "content": prompt}):
        messages.append({"role": "user", "content": prompt})
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] and m["role"] != "system":
            joined = merged[-1]["content"] + "\n\n" + m["content"]
            merged[-1] = {"role": m["role"], "content": joined}
        else:
            merged.append(dict(m))
    return merged


def measure(logprobs: dict[str, Any], start: int, end: int, prompt_length: int,
            top_k: int) -> Score:
    """The answer's numbers from a vLLM `logprobs` object of an echoed prompt whose answer
    occupies characters [start, end) and whose end-of-turn marker follows it."""
    try:
        tokens = list(logprobs["tokens"])
        values = list(logprobs["token_logprobs"])
        tops = list(logprobs.get("top_logprobs") or [None] * len(tokens))
        offsets = list(logprobs["text_offset"])
    except (KeyError, TypeError) as exc:
        raise RescoreError(f"no echoed logprobs in the answer ({exc})") from exc
    if not (len(tokens) == len(values) == len(offsets) == len(tops)):
        raise RescoreError("logprobs of unequal lengths")
    answer: list[float] = []
    outside = 0
    end_logprob: float | None = None
    for token, value, top, at in zip(tokens, values, tops, offsets, strict=True):
        if not isinstance(at, int) or at >= prompt_length:
            continue  # the generated token (max_tokens: 1)
        size = len(token) if isinstance(token, str) else 1
        if at + size > start and at < end:
            if value is None:
                continue  # the first token of the prompt: no log-probability
            answer.append(float(value))
            better = sum(1 for t, v in (top or {}).items()
                         if t != token and v is not None and float(v) > float(value))
            if better >= top_k:
                outside += 1
        elif at >= end and end_logprob is None and value is not None:
            end_logprob = float(value)
    if not answer:
        raise RescoreError("no token of the answer came back")
    return Score(tokens=len(answer), mean_logprob=sum(answer) / len(answer),
                 outside_top_k=outside / len(answer), end_logprob=end_logprob)


async def score(c: AppContext, model: str, messages: Sequence[dict[str, str]],
                answer: str) -> Score:
    """One prefill of the conversation and the answer on the scoring server."""
    s = c.settings
    prefix = chat_prompt(messages)
    prompt = prefix + answer + END
    key = s.rescore_api_key.get_secret_value() if s.rescore_api_key is not None else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "prompt": prompt, "echo": True, "logprobs": s.rescore_top_k,
            "max_tokens": 1, "temperature": 0}
    # a client per check: at VERIFY_SAMPLE_RATE of the answers, a connection's set-up is
    # nothing beside the prefill, and no pool outlives the event loop that made it
    async with httpx.AsyncClient(timeout=s.rescore_timeout_s) as client:
        url = (s.rescore_url or "").rstrip("/") + "/completions"
        r = await client.post(url, json=body, headers=headers)
    if r.status_code != 200:
        raise RescoreError(f"the scoring server answered HTTP {r.status_code}: {r.text[:200]}")
    try:
        choice = r.json()["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RescoreError(f"not a completion ({exc})") from exc
    return measure(choice.get("logprobs") or {}, len(prefix), len(prefix) + len(answer),
                   len(prompt), s.rescore_top_k)


def judge(c: AppContext, found: Score, stopped_at_length: bool) -> tuple[bool, str]:
    s = c.settings
    why = []
    if found.mean_logprob < s.rescore_min_mean_logprob:
        why.append(f"mean logprob {found.mean_logprob:.2f} < {s.rescore_min_mean_logprob}")
    if found.outside_top_k > s.rescore_max_outside_top_k:
        why.append(f"{found.outside_top_k:.0%} of its tokens outside the top {s.rescore_top_k}")
    if (not stopped_at_length and found.end_logprob is not None
            and found.end_logprob < s.rescore_min_end_logprob):
        why.append(f"the model would not stop there (end logprob {found.end_logprob:.2f})")
    return not why, "; ".join(why)


def scorable(job: Any) -> bool:
    """A plain text answer (tool calls and structured output are not scored)."""
    asked = orjson.loads(job.options) if job.options else {}
    return not any(asked.get(k) for k in _STRUCTURED)


async def http_rescorer(c: AppContext, job: Any, answer: str, model: str) -> Verdict | None:
    """The Rescorer (app/trust/verify.py) of RESCORE_URL; None when it cannot judge the job."""
    s = c.settings
    model = model.split(ROUTE_SEP)[0]
    if not s.rescore_url or not answer.strip() or not scorable(job):
        return None
    if s.rescore_model:
        if model and model != s.rescore_model:
            return None  # the answer claims another model than the server's
        model = s.rescore_model
    if not model:
        return None
    async with c.db.reads() as session:
        history = await checkjobs.history_of(session, job, s.chat_history_limit)
    found = await score(c, model, conversation(job.context, history, job.prompt), answer)
    passed, why = judge(c, found, job.finish_reason == "length")
    verdict = Rescored(agree=passed, similarity=round(math.exp(found.mean_logprob), 4),
                       prefix_equal=False, detail=why)
    log.info("trust: re-scored job %s (%d tokens): mean logprob %.2f, %.0f%% outside the top %d,"
             " end %s: %s", job.id, found.tokens, found.mean_logprob, 100 * found.outside_top_k,
             s.rescore_top_k, found.end_logprob, "passed" if passed else f"failed ({why})")
    return verdict


# tasks in flight, per event loop (a test's loop ends with its app)
_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Task[None]]] = \
    weakref.WeakKeyDictionary()


def in_flight() -> int:
    return len(_tasks.get(asyncio.get_running_loop(), ()))


def schedule(c: AppContext, rescorers: Sequence[Any], jobs: Sequence[tuple[str, str]],
             miner_id: int) -> None:
    """Re-score each (job id, claimed model) in a task of its own, after the commit and off
    the request; past RESCORE_CONCURRENCY tasks in flight, the rest are skipped."""
    if not rescorers:
        return
    tasks = _tasks.setdefault(asyncio.get_running_loop(), set())
    for job_id, model in jobs:
        if len(tasks) >= c.settings.rescore_concurrency:
            log.warning("trust: %d re-scores in flight (RESCORE_CONCURRENCY); job %s is not "
                        "re-scored", len(tasks), job_id)
            continue
        task = asyncio.create_task(_rescore(c, rescorers, job_id, model, miner_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _rescore(c: AppContext, rescorers: Sequence[Any], job_id: str, model: str,
                   miner_id: int) -> None:
    try:
        async with c.db.reads() as session:
            job = await session.get(ChatJob, job_id)
        if job is None or job.status != JobStatus.completed or job.miner_id != miner_id:
            return
        for rescorer in rescorers:
            try:
                verdict = await asyncio.wait_for(rescorer(c, job, job.response or "", model),
                                                 c.settings.rescore_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a check never fails an answer
                log.warning("trust: could not re-score job %s (%s: %s); check skipped", job_id,
                            type(exc).__name__, str(exc)[:200] or "timed out")
                continue
            if verdict is None:
                continue
            why = getattr(verdict, "detail", "")
            async with c.db.transaction() as session:
                await reputation.record(
                    session, c, miner_id=miner_id, kind="rescore", passed=verdict.agree,
                    job_id=job_id, now=utcnow(), similarity=verdict.similarity,
                    forfeit_tokens=job.output_tokens,
                    detail=None if verdict.agree else f"re-scored: {why or 'implausible'}")
    except Exception:
        log.exception("trust: re-scoring job %s failed; check skipped", job_id)
