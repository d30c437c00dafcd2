"""A minimal client for an OpenAI-compatible model server (vLLM, Ollama, llama.cpp server, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class ModelError(Exception):
    """The model server could not produce an answer (down, erroring, timed out, or nonsense)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


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
        temperature: float | None = 0.7,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.temperature = temperature
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

    async def chat(self, messages: list[dict[str, str]], max_tokens: int) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": False,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        try:
            r = await self._http.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise ModelError("the model server timed out") from None
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach the model server ({_why(exc)})") from None
        if r.status_code != 200:
            raise ModelError(f"the model server answered HTTP {r.status_code}: {_snippet(r)}")
        try:
            data = r.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except Exception:
            raise ModelError("the model server's answer is not an OpenAI chat completion") from None
        if not isinstance(text, str):
            raise ModelError("the model server returned no text")
        usage = data.get("usage")
        return Completion(
            text=text,
            prompt_tokens=_usage_int(usage, "prompt_tokens"),
            completion_tokens=_usage_int(usage, "completion_tokens"),
            finish_reason=choice.get("finish_reason"),
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
