"""A minimal client for an OpenAI-compatible model server (vLLM, Ollama, llama.cpp server, ...):
whole answers, or streamed ones (Server-Sent Events of `chat.completion.chunk`, read with
httpx-sse)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse


class ModelError(Exception):
    """The model server could not produce an answer (down, erroring, timed out, or nonsense)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


# What a job may ask of the model server beyond sampling, passed through as the client sent it.
PASSED_THROUGH = ("tools", "tool_choice", "parallel_tool_calls", "response_format")
# The capabilities a miner declares, as the backend names them.
CAPABILITIES = ("tools", "json_object", "json_schema")


@dataclass(frozen=True)
class Sampling:
    """What a job asks of the generation beyond its length; None leaves it to the miner's
    setting (temperature) or to the model server (the others)."""

    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    # tools, tool_choice, parallel_tool_calls, response_format: OpenAI's shapes, as the job has them
    extra: tuple[tuple[str, Any], ...] = ()
    seed: int | None = None  # with temperature > 0, makes the sampling reproducible


def normalize_base_url(url: str) -> str:
    """Accept `http://host:8000`, `http://host:8000/` or `http://host:8000/v1`; return the /v1 root."""
    u = url.strip().rstrip("/")
    if not u.endswith("/v1"):
        u += "/v1"
    return u


def _usage_int(usage: Any, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    v = usage.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return None
    return v


class ModelClient:
    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        temperature: float | None = 0.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.temperature = temperature
        self.timeout = timeout  # seconds for one generation, streamed or not
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_models(self) -> list[str]:
        try:
            r = await self._http.get("/models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach the model server at {self.base_url} ({_why(exc)})") from None
        if r.status_code != 200:
            raise ModelError(f"GET {self.base_url}/models answered HTTP {r.status_code}")
        try:
            data = r.json().get("data") or []
            return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
        except Exception:
            raise ModelError(f"GET {self.base_url}/models did not return an OpenAI model list") from None

    def _body(
        self, messages: list[dict[str, str]], max_tokens: int, sampling: Sampling | None, stream: bool
    ) -> dict[str, Any]:
        sampling = sampling or Sampling()
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": stream,
        }
        temperature = self.temperature if sampling.temperature is None else sampling.temperature
        if temperature is not None:
            body["temperature"] = temperature
        if sampling.top_p is not None:
            body["top_p"] = sampling.top_p
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        body.update(dict(sampling.extra))
        if sampling.seed is not None:  # vLLM, llama.cpp, Ollama and OpenAI take `seed`
            body["seed"] = sampling.seed
        if stream:
            # usage arrives in a last chunk with no choices (vLLM, llama.cpp, Ollama, OpenAI)
            body["stream_options"] = {"include_usage": True}
        return body

    async def probe(self) -> tuple[str, ...]:
        """What the model server can do beyond plain chat, asked once with a one-token request
        each: a server that refuses tools or a response_format (vLLM without
        --enable-auto-tool-choice, servers without guided decoding) answers 4xx."""
        tool = {"type": "function", "function": {"name": "probe", "parameters": {
            "type": "object", "properties": {}}}}
        trials = {
            "tools": {"tools": [tool], "tool_choice": "auto"},
            "json_object": {"response_format": {"type": "json_object"}},
            "json_schema": {"response_format": {"type": "json_schema", "json_schema": {
                "name": "probe", "schema": {"type": "object", "properties": {}}}}},
        }
        found = []
        for name, extra in trials.items():
            body = {**self._body([{"role": "user", "content": "Say OK in JSON."}], 1, None,
                                 stream=False), **extra}
            try:
                r = await self._http.post("/chat/completions", json=body, timeout=60.0)
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                found.append(name)
        return tuple(found)

    async def chat(
        self, messages: list[dict[str, str]], max_tokens: int, sampling: Sampling | None = None
    ) -> Completion:
        body = self._body(messages, max_tokens, sampling, stream=False)
        try:
            r = await self._http.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise ModelError("the model server timed out") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach the model server ({_why(exc)})") from None
        if r.status_code != 200:
            raise ModelError(f"the model server answered HTTP {r.status_code}: {_snippet(r)}")
        return _completion(r)

    async def chat_stream(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        on_delta: Callable[[str], None],
        sampling: Sampling | None = None,
    ) -> Completion:
        """Generate with `stream: true`, calling on_delta(text) for each piece of new output as
        it arrives; return the whole Completion, as chat() does. A server that answers with a
        whole chat.completion instead of a stream is accepted: its text is one delta."""
        body = self._body(messages, max_tokens, sampling, stream=True)
        try:
            # The client's timeout bounds each read; this bounds the whole generation, as the
            # one read of a non-streamed answer does.
            async with asyncio.timeout(self.timeout):
                async with aconnect_sse(self._http, "POST", "/chat/completions", json=body) as source:
                    r = source.response
                    if r.status_code != 200:
                        await r.aread()
                        raise ModelError(f"the model server answered HTTP {r.status_code}: {_snippet(r)}")
                    if r.headers.get("content-type", "").startswith("application/json"):
                        await r.aread()
                        completion = _completion(r)
                        if completion.text:
                            on_delta(completion.text)
                        return completion
                    return await _read_stream(source.aiter_sse(), on_delta)
        except (TimeoutError, httpx.TimeoutException):
            raise ModelError("the model server timed out") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach the model server ({_why(exc)})") from None
        except SSEError:
            raise ModelError("the model server did not answer with an event stream") from None


def _completion(r: httpx.Response) -> Completion:
    try:
        data = r.json()
        choice = data["choices"][0]
        text = choice["message"]["content"]
        calls = choice["message"].get("tool_calls")
    except Exception:
        raise ModelError("the model server's answer is not an OpenAI chat completion") from None
    if isinstance(calls, list) and calls:
        # the answer is the calls: their JSON array is the output, signed with "tool_calls"
        usage = data.get("usage")
        return Completion(
            text=_calls_text(calls),
            prompt_tokens=_usage_int(usage, "prompt_tokens"),
            completion_tokens=_usage_int(usage, "completion_tokens"),
            finish_reason="tool_calls",
        )
    if not isinstance(text, str):
        raise ModelError("the model server returned no text")
    usage = data.get("usage")
    return Completion(
        text=text,
        prompt_tokens=_usage_int(usage, "prompt_tokens"),
        completion_tokens=_usage_int(usage, "completion_tokens"),
        finish_reason=choice.get("finish_reason"),
    )


def _calls_text(calls: list[Any]) -> str:
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ModelError("the model server returned a tool call without a function name")
        args = fn.get("arguments")
        out.append({"id": str(call.get("id") or f"call_{i}"), "type": "function",
                    "function": {"name": fn["name"],
                                 "arguments": args if isinstance(args, str) else json.dumps(args or {})}})
    return json.dumps(out)


async def _read_stream(events: Any, on_delta: Callable[[str], None]) -> Completion:
    """The chat.completion.chunk events of one answer, up to `data: [DONE]`."""
    parts: list[str] = []
    finish: str | None = None
    usage: Any = None
    done = False
    try:
        async for event in events:
            if event.data == "[DONE]":
                done = True
                break
            if not event.data:  # keep-alive or a named event without data
                continue
            try:
                chunk = json.loads(event.data)
            except ValueError:
                raise ModelError("the model server streamed an event that is not JSON") from None
            if not isinstance(chunk, dict):
                raise ModelError("the model server streamed an event that is not a chunk")
            if "error" in chunk:  # vLLM and llama.cpp report a failure mid-stream like this
                err = chunk["error"]
                why = err.get("message") if isinstance(err, dict) else err
                raise ModelError(f"the model server failed mid-answer: {' '.join(str(why).split())[:200]}")
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and text:
                    parts.append(text)
                    on_delta(text)
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
    finally:
        await events.aclose()
    if not done and finish is None:
        # A server that died mid-answer: what came is not the whole answer.
        raise ModelError("the model server's stream ended before the answer was finished")
    return Completion(
        text="".join(parts),
        prompt_tokens=_usage_int(usage, "prompt_tokens"),
        completion_tokens=_usage_int(usage, "completion_tokens"),
        finish_reason=finish,
    )


def _why(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


def _snippet(r: httpx.Response, n: int = 200) -> str:
    try:
        text = r.text
    except Exception:
        return ""
    text = " ".join(text.split())
    return text[:n]
