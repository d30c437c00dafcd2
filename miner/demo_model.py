"""A tiny OpenAI-compatible stand-in for a model server, for `make dev` and tests.

It is NOT a language model: every answer is deterministic, built from the prompt, and starts
with "[MIA demo model]" so nobody mistakes it for one. It honours `max_tokens` (a token is a
word), `stop`, and `stream: true` (one chat.completion.chunk per word, the usage chunk when
`stream_options.include_usage`, then `data: [DONE]`). Switches for tests:

- `--delay S` / `--word-delay S` / `--fail-status CODE` at start-up, or at run time
  `POST /demo/control {"delay": S, "word_delay": S, "fail_status": CODE|null, "fail_next": N}`;
- a directive in the last user message: `[demo:sleep=2.5]`, `[demo:word_delay=0.05]` (seconds
  per word generated, streamed or not), `[demo:words=200]` (an answer padded to 200 words),
  `[demo:fail=500]`, or `[demo:cut=5]` (a stream that breaks off after 5 words, as from a
  server that died).

Answers depend on the conversation only, never on `temperature`, `top_p` or `seed` (all
accepted and recorded): greedy and seeded requests both reproduce them, so two honest demo
miners give the same answer to the same job, as two honest miners running one model with greedy
decoding do (issue 18's verification compares them).

Switches to misbehave, off by default, for tests and the trust bench (`python -m bench trust`):
`--cheat KIND` at start-up or `POST /demo/control {"cheat": KIND|null, "truncate_at": F,
"cheat_after": N}` at run time, KIND one of
- `canned`: the same fixed text for every prompt;
- `truncate`: the honest answer cut after `truncate_at` of its words (0.3 by default);
- `other-model`: another deterministic generator (a cheaper "model" behind the declared name);
- `copy`: replays an answer it gave earlier to another conversation (it answers honestly only
  while it has nothing to replay);
and `cheat_after` N answers honestly N times before it starts (a sleeper).

Run: `python -m miner.demo_model --port 8001`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEMO_MODEL_NAME = "mia-demo"
LABEL = "[MIA demo model]"
MAX_SLEEP = 60.0
_DIRECTIVE = re.compile(r"\[demo:(sleep|word_delay|words|fail|cut)=([0-9.]+)\]")
# Padding words, picked by the conversation's hash: two conversations get different padding, so
# an answer replayed for another prompt, or another generator's, differs all along.
_VOCABULARY = (
    "order parcel delivery refund account invoice payment support ticket update address "
    "shipping return policy warranty product service customer request status tracking number "
    "days week team contact email phone store online label courier package replacement credit "
    "balance subscription plan renewal cancel change password login access settings app device "
    "battery screen setup guide steps please check confirm receive send within business hours "
    "today soon thanks help issue solved note details reference").split()
MAX_WORDS = 100_000
_WORD = re.compile(r"\S+")
CHEATS = ("canned", "truncate", "other-model", "copy")
CANNED = ("Thank you for your message. Our team has received your request and will get back to "
          "you shortly. Is there anything else I can help you with today?")


@dataclass
class DemoState:
    model: str = DEMO_MODEL_NAME
    delay: float = 0.0  # seconds added to every chat completion
    word_delay: float = 0.0  # seconds per word generated, streamed or not
    fail_status: int | None = None  # every chat completion answers this status
    fail_next: int = 0  # the next N chat completions answer 500
    strict_roles: bool = False  # reject a system role / non-alternating turns, like Mixtral-Instruct's template
    streams: bool = True  # False: answer `stream: true` with a whole chat.completion, as servers without streaming do
    requests: int = 0
    completed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    # What the last chat completion request asked for: model, max_tokens, temperature, top_p,
    # seed, stop, stream, stream_options (so tests can see what a client sent).
    last_request: dict[str, Any] = field(default_factory=dict)
    # Misbehaviour (module docstring): None answers honestly.
    cheat: str | None = None
    truncate_at: float = 0.3  # `truncate`: the share of the honest answer's words kept
    cheat_after: int = 0  # honest answers before the cheating starts
    answered: int = 0  # answers given (the sleeper's count)
    # `copy`: answers given honestly, (conversation digest, text), newest last
    seen: list[tuple[str, str]] = field(default_factory=list)


def count_tokens(text: str) -> int:
    """Demo tokenizer: whitespace-separated words."""
    return len(_WORD.findall(text))


def _digest(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(repr([(m.get("role"), m.get("content")) for m in messages]).encode()).hexdigest()


def _words_from(seed: str, n: int) -> list[str]:
    """n words of the vocabulary, picked deterministically by `seed`."""
    out: list[str] = []
    block = 0
    while len(out) < n:
        h = hashlib.sha256(f"{seed}:{block}".encode()).digest()
        out.extend(_VOCABULARY[b % len(_VOCABULARY)] for b in h[: min(32, n - len(out))])
        block += 1
    return out


def _shown(messages: list[dict[str, Any]]) -> str:
    last_user = next(
        (str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), ""
    )
    shown = " ".join(_DIRECTIVE.sub("", last_user).split())
    return shown[:197] + "..." if len(shown) > 200 else shown


def honest_text(messages: list[dict[str, Any]], words: int = 0) -> str:
    """The demo model's whole answer to a conversation (before stop and max_tokens)."""
    turns = sum(1 for m in messages if m.get("role") in ("user", "assistant"))
    has_system = any(m.get("role") == "system" for m in messages)
    digest = _digest(messages)
    text = (
        f"{LABEL} This is a deterministic demo answer, not a real AI. "
        f'You wrote: "{_shown(messages)}". '
        f"Conversation turns: {turns}; business context: {'yes' if has_system else 'no'}; "
        f"fingerprint {digest[:8]}. Point mia-miner at vLLM, Ollama or llama.cpp for real answers."
    )
    pad = max(0, min(words, MAX_WORDS) - count_tokens(text))
    if pad:
        text += " " + " ".join(_words_from(digest, pad))
    return text


def other_model_text(messages: list[dict[str, Any]], words: int = 0) -> str:
    """Another deterministic generator: what a cheaper model behind the declared name answers."""
    digest = hashlib.sha256(("other-model:" + _digest(messages)).encode()).hexdigest()
    text = f"{LABEL} Quick reply about {_shown(messages)!r}: see below."
    n = max(12, min(words, MAX_WORDS) - count_tokens(text))
    return text + " " + " ".join(_words_from(digest, n))


def limit(text: str, max_tokens: int, stop: list[str] | None = None) -> tuple[str, int, bool]:
    """`text` cut before the first `stop` string and after `max_tokens` words; returns (text,
    completion_tokens, truncated by max_tokens)."""
    for s in stop or ():
        if s and s in text:
            text = text[: text.index(s)]
    found = _WORD.findall(text)
    if len(found) > max_tokens:
        return " ".join(found[:max_tokens]), max_tokens, True
    return " ".join(found), len(found), False


def demo_answer(
    messages: list[dict[str, Any]], max_tokens: int, stop: list[str] | None = None, words: int = 0
) -> tuple[str, int, bool]:
    """Deterministic reply for a conversation, padded to `words` words, cut before the first
    `stop` string and after `max_tokens` words; returns (text, completion_tokens, truncated by
    max_tokens)."""
    return limit(honest_text(messages, words), max_tokens, stop)


def answer(
    st: DemoState, messages: list[dict[str, Any]], max_tokens: int,
    stop: list[str] | None = None, words: int = 0,
) -> tuple[str, int, bool]:
    """What this demo model answers, switches included (the module docstring)."""
    st.answered += 1
    kind = st.cheat if st.answered > st.cheat_after else None
    if kind is None:
        return demo_answer(messages, max_tokens, stop, words)
    if kind == "canned":
        text = CANNED
    elif kind == "truncate":
        full = _WORD.findall(honest_text(messages, words))
        text = " ".join(full[: max(1, math.ceil(len(full) * st.truncate_at))])
    elif kind == "other-model":
        text = other_model_text(messages, words)
    elif kind == "copy":
        digest = _digest(messages)
        others = [t for d, t in st.seen if d != digest]
        if others:  # the answer to another conversation, picked by this one's hash
            text = others[int(digest[:8], 16) % len(others)]
        else:
            text = honest_text(messages, words)
            if not st.seen:
                st.seen.append((digest, text))
    else:
        raise ValueError(f"unknown cheat {kind!r}; one of {', '.join(CHEATS)}")
    return limit(text, max_tokens, stop)


def respond(
    st: DemoState, messages: list[dict[str, Any]], max_tokens: int, stop: list[str] | None = None
) -> tuple[str, int, bool]:
    """The answer the demo model server gives this conversation, without HTTP (the bench's
    simulated miners use it): the `[demo:words=N]` directive honoured, the others ignored."""
    last_user = next((str(m.get("content") or "") for m in reversed(messages)
                      if m.get("role") == "user"), "")
    words = 0
    for key, value in _DIRECTIVE.findall(last_user):
        if key == "words":
            words = int(float(value))
    return answer(st, messages, max_tokens, stop, words)


def set_cheat(st: DemoState, body: dict[str, Any]) -> None:
    """Apply the misbehaviour switches of a /demo/control body (or the command line's)."""
    if "cheat" in body:
        cheat = body["cheat"]
        if cheat is not None and cheat not in CHEATS:
            raise ValueError(f"cheat must be one of {', '.join(CHEATS)} or null")
        st.cheat = cheat
    if "truncate_at" in body:
        at = float(body["truncate_at"])
        if not 0 < at < 1:
            raise ValueError("truncate_at must be between 0 and 1")
        st.truncate_at = at
    if "cheat_after" in body:
        st.cheat_after = max(0, int(body["cheat_after"]))


_RECORDED = ("model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed",
             "stop", "stream", "stream_options")


async def _stream_events(
    st: DemoState,
    ident: str,
    text: str,
    finish: str,
    usage: dict[str, int] | None,
    word_delay: float,
    cut: int | None,
) -> AsyncIterator[str]:
    """The answer as Server-Sent Events, one word per chunk; the deltas concatenate to `text`.
    `cut`: break off after that many words, with neither finish_reason nor [DONE]."""
    created = int(time.time())
    st.in_flight += 1
    st.max_in_flight = max(st.max_in_flight, st.in_flight)

    def event(delta: dict[str, Any] | None, finish_reason: str | None = None,
              **extra: Any) -> str:
        chunk: dict[str, Any] = {
            "id": ident, "object": "chat.completion.chunk", "created": created, "model": st.model,
            "choices": [] if delta is None else
            [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n"

    try:
        yield event({"role": "assistant", "content": ""})
        for i, word in enumerate(_WORD.findall(text)):
            if cut is not None and i >= cut:
                return
            if word_delay > 0:
                await asyncio.sleep(word_delay)
            yield event({"content": word if i == 0 else " " + word})
        yield event({}, finish)
        if usage is not None:
            yield event(None, usage=usage)
        yield "data: [DONE]\n\n"
        st.completed += 1
    finally:
        st.in_flight -= 1


def _alternates(messages: list[dict[str, Any]]) -> bool:
    expected = ("user", "assistant")
    return all(m.get("role") == expected[i % 2] for i, m in enumerate(messages))


def _oai_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


# --- tool calls and JSON output (deterministic, so tool calling and structured output are tested
# without a GPU) ------------------------------------------------------------------------------


def example_of(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A deterministic value matching a JSON schema (the usual subset: $ref into $defs,
    anyOf/oneOf, enum, const, objects with all their properties, arrays of one item)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return example_of(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or () if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return example_of(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: example_of(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        item = example_of(schema.get("items") or {"type": "string"}, root, depth + 1)
        return [item] * max(1, int(schema.get("minItems") or 1))
    if kind == "integer":
        return int(schema.get("minimum") or 1)
    if kind == "number":
        return float(schema.get("minimum") or 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "demo"


def structured_answer(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The assistant message for a request with tools or a response_format, or None for plain
    chat. With tools (and tool_choice not "none"), before any tool result: a call of the chosen
    tool (the named one, else the first) with arguments made from its parameters. After tool
    results: a text answer quoting them. response_format: JSON matching the schema, or a JSON
    object."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    answered = bool(messages) and messages[-1].get("role") == "tool"
    if tools and choice != "none" and not answered:
        fn = tools[0]["function"]
        if isinstance(choice, dict):
            named = (choice.get("function") or {}).get("name")
            fn = next((t["function"] for t in tools if t["function"].get("name") == named), fn)
        args = example_of(fn.get("parameters") or {"type": "object", "properties": {}})
        digest = hashlib.sha256(repr(messages).encode()).hexdigest()[:12]
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{digest}", "type": "function",
            "function": {"name": fn.get("name"), "arguments": json.dumps(args or {})}}]}
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"role": "assistant", "content": json.dumps(example_of(schema))}
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"role": "assistant", "content": json.dumps({"answer": LABEL + " a JSON answer"})}
    if answered:
        results = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            results.insert(0, str(m.get("content") or ""))
        return {"role": "assistant", "content": f"{LABEL} The tool answered: {' '.join(results)}"}
    return None


def create_demo_app(state: DemoState | None = None) -> Starlette:
    st = state or DemoState()

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": st.model, "object": "model", "created": 0, "owned_by": "mia-demo"}],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": st.model, "demo": True})

    async def control(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return _oai_error(400, "body must be JSON")
            if body.get("reset"):
                fresh = DemoState(model=st.model)
                for k in asdict(fresh):
                    if k not in ("in_flight",):
                        setattr(st, k, getattr(fresh, k))
            if "delay" in body:
                st.delay = min(MAX_SLEEP, max(0.0, float(body["delay"])))
            if "word_delay" in body:
                st.word_delay = min(MAX_SLEEP, max(0.0, float(body["word_delay"])))
            if "fail_status" in body:
                st.fail_status = None if body["fail_status"] is None else int(body["fail_status"])
            if "fail_next" in body:
                st.fail_next = max(0, int(body["fail_next"]))
            if "strict_roles" in body:
                st.strict_roles = bool(body["strict_roles"])
            if "streams" in body:
                st.streams = bool(body["streams"])
            try:
                set_cheat(st, body)
            except (TypeError, ValueError) as exc:
                return _oai_error(400, str(exc))
        shown = asdict(st)
        shown["seen"] = len(st.seen)  # the copier's memory: how many answers, not their text
        return JSONResponse(shown)

    async def chat(request: Request) -> Response:
        st.requests += 1
        try:
            body = await request.json()
        except ValueError:
            return _oai_error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _oai_error(400, "body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _oai_error(400, "messages must be a non-empty list of {role, content}")
        st.last_request = {k: body.get(k) for k in _RECORDED if k in body}
        requested = body.get("model")
        if requested not in (None, st.model, st.model.removesuffix(":latest")):  # as Ollama does
            return _oai_error(404, f"The model `{requested}` does not exist.", "NotFoundError")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return _oai_error(400, "max_tokens must be a positive integer")
        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(x, str) for x in stop)):
            return _oai_error(400, "stop must be a string or a list of strings")
        for key in ("temperature", "top_p"):  # accepted, and without effect: answers are fixed
            v = body.get(key)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                return _oai_error(400, f"{key} must be a number")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            return _oai_error(400, "seed must be an integer")
        stream = bool(body.get("stream")) and st.streams
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and bool(options.get("include_usage"))

        if st.strict_roles and not _alternates(messages):
            return _oai_error(400, "Conversation roles must alternate user/assistant/user/assistant/...")
        last_user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        sleep, word_delay, fail, cut, words = st.delay, st.word_delay, st.fail_status, None, 0
        for key, value in _DIRECTIVE.findall(last_user):
            if key == "sleep":
                sleep = min(MAX_SLEEP, float(value))
            elif key == "word_delay":
                word_delay = min(MAX_SLEEP, float(value))
            elif key == "words":
                words = int(float(value))
            elif key == "cut":
                cut = int(float(value))
            else:
                fail = int(float(value))
        if st.fail_next > 0:
            st.fail_next -= 1
            fail = fail or 500
        special = structured_answer(body, messages)
        if special is not None:  # tool calls or JSON: one whole answer, never streamed
            st.completed += 1
            said = special.get("content") or json.dumps(special.get("tool_calls"))
            return JSONResponse({
                "id": "chatcmpl-demo-" + hashlib.sha256(said.encode()).hexdigest()[:12],
                "object": "chat.completion", "created": int(time.time()), "model": st.model,
                "choices": [{"index": 0, "message": special,
                             "finish_reason": "tool_calls" if special.get("tool_calls") else "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": count_tokens(said),
                          "total_tokens": count_tokens(said)}})
        text, completion_tokens, truncated = answer(st, messages, max_tokens, stop, words)
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ident = "chatcmpl-demo-" + hashlib.sha256(text.encode()).hexdigest()[:12]
        finish = "length" if truncated else "stop"
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            if sleep > 0:
                await asyncio.sleep(sleep)
            if fail:
                return _oai_error(fail, "demo model: failure requested", "server_error")
            if not stream and word_delay > 0:
                await asyncio.sleep(min(MAX_SLEEP, word_delay * completion_tokens))
        finally:
            st.in_flight -= 1  # a stream counts itself in flight while it runs
        if stream:
            events = _stream_events(st, ident, text, finish, usage if include_usage else None,
                                    word_delay, cut)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        st.completed += 1
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": st.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        )

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/demo/control", control, methods=["GET", "POST"]),
        ]
    )
    app.state.demo = st
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m miner.demo_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--model", default=DEMO_MODEL_NAME, help="name served at /v1/models")
    p.add_argument("--delay", type=float, default=0.0, help="seconds added to every completion")
    p.add_argument("--word-delay", type=float, default=0.0,
                   help="seconds per word generated: a streamed answer arrives word by word")
    p.add_argument("--fail-status", type=int, default=None, help="answer every completion with this HTTP status")
    p.add_argument("--strict-roles", action="store_true", help="reject system messages, like Mixtral-Instruct's chat template")
    p.add_argument("--cheat", choices=CHEATS, default=None,
                   help="misbehave, for tests and the trust bench: canned text, truncated answers, "
                        "another model's, or answers copied from other prompts (default: honest)")
    p.add_argument("--truncate-at", type=float, default=0.3, metavar="F",
                   help="--cheat truncate: the share of each answer's words kept (default 0.3)")
    p.add_argument("--cheat-after", type=int, default=0, metavar="N",
                   help="answer honestly N times before cheating (default 0)")
    ns = p.parse_args(argv)
    state = DemoState(model=ns.model, delay=ns.delay, word_delay=ns.word_delay,
                      fail_status=ns.fail_status, strict_roles=ns.strict_roles)
    try:
        set_cheat(state, {"cheat": ns.cheat, "truncate_at": ns.truncate_at,
                          "cheat_after": ns.cheat_after})
    except ValueError as exc:
        p.error(str(exc))
    app = create_demo_app(state)
    cheating = f" (CHEATING: {ns.cheat})" if ns.cheat else ""
    print(f"MIA demo model (NOT a real LLM) serving {ns.model!r} on http://{ns.host}:{ns.port}/v1{cheating}", flush=True)
    uvicorn.run(app, host=ns.host, port=ns.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
