"""The clients businesses use, against one started system shared by every test here: the real
coordinator on 127.0.0.1, mia-miner (in a thread of its own) and the demo model. The official
openai SDK, LangChain (langchain-openai) and litellm, pinned in the dev extras; and every /v1
response and stream chunk checked against the vendored schemas of OpenAI's OpenAPI document
(schemas/openai.json, which names its source)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from miner.demo_model import LABEL, DemoState, create_demo_app
from tests.conftest import make_settings
from tests.miner.support import Backend, RunningMiner, UvicornThread, free_port

pytestmark = pytest.mark.timeout(120)
MODEL = "mia-demo"
SCHEMAS = json.loads((Path(__file__).parent / "schemas" / "openai.json").read_text())
ORDER_TOOL = {"type": "function", "function": {
    "name": "look_up_order", "description": "the status of an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}},
                   "required": ["order_id"]}}}


def conforms(name: str, value: Any) -> None:
    validator = Draft202012Validator({**SCHEMAS, "$ref": f"#/{name}"})
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(value)]
    assert not errors, f"not a {name}: {errors}"


@dataclass
class System:
    url: str
    key: str

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0,
                                  timeout=60)


@pytest.fixture(scope="module")
def system(redis_url: str, sqlite_template: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    db = tmp_path_factory.mktemp("compat") / "mia.db"
    shutil.copy(sqlite_template, db)
    port = free_port()
    settings = make_settings(f"sqlite+aiosqlite:///{db}", redis_url, tokenizer="words",
                             public_url=f"http://127.0.0.1:{port}")
    from app.main import create_app
    from tests.support.services import delete_keys

    backend = Backend(settings=settings, server=UvicornThread(
        port=port, factory=lambda: create_app(settings)).start())
    demo = UvicornThread(factory=lambda: create_demo_app(DemoState())).start()
    ready, stop = threading.Event(), threading.Event()

    def mine() -> None:
        async def run() -> None:
            async with RunningMiner(backend.url, demo.url + "/v1", concurrency=4) as m:
                while not m.miner.declared_model or not m.miner.backend.capabilities:
                    await asyncio.sleep(0.05)
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        asyncio.run(run())

    miner = threading.Thread(target=mine, daemon=True)
    miner.start()
    try:
        assert ready.wait(30), "the miner never started"
        key = asyncio.run(backend.api_key())
        with httpx.Client(base_url=backend.url) as http:  # its first poll declares the model
            for _ in range(200):
                r = http.get(f"/v1/models/{MODEL}", headers={"Authorization": f"Bearer {key}"})
                if r.status_code == 200:
                    break
                threading.Event().wait(0.05)
        yield System(backend.url, key)
    finally:
        stop.set()
        miner.join(30)
        demo.stop()
        backend.server.stop()
        delete_keys(redis_url, f"{settings.redis_prefix}:*")


class Ticket(BaseModel):
    title: str
    priority: int


async def test_openai_sdk_parse_and_tools(system: System) -> None:
    sdk = system.sdk()
    done = await sdk.chat.completions.parse(model=MODEL, response_format=Ticket, messages=[
        {"role": "user", "content": "Open a ticket for order 4417"}])
    assert done.choices[0].message.parsed == Ticket(title="demo", priority=1)
    model = await sdk.models.retrieve(MODEL)
    assert model.id == MODEL
    async with sdk.chat.completions.stream(model=MODEL, response_format=Ticket, messages=[
            {"role": "user", "content": "Open a ticket"}]) as events:
        assert (await events.get_final_completion()).choices[0].message.parsed is not None


async def test_langchain_bind_tools_and_structured_output(system: System) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=f"{system.url}/v1", api_key=system.key,
                     max_retries=0, timeout=60)
    ask = [HumanMessage("Where is order 4417?")]
    first = await llm.bind_tools([ORDER_TOOL]).ainvoke(ask)
    assert first.tool_calls and first.tool_calls[0]["name"] == "look_up_order"
    assert first.tool_calls[0]["args"] == {"order_id": 1}
    final = await llm.bind_tools([ORDER_TOOL]).ainvoke([*ask, first, ToolMessage(
        "shipped on Monday", tool_call_id=first.tool_calls[0]["id"])])
    assert final.content == f"{LABEL} The tool answered: shipped on Monday"
    # streamed, the tool call arrives as chunks that add up
    gathered = None
    async for chunk in llm.bind_tools([ORDER_TOOL]).astream(ask):
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None and gathered.tool_calls[0]["name"] == "look_up_order"
    for method in ("function_calling", "json_schema"):
        ticket = await llm.with_structured_output(Ticket, method=method).ainvoke(
            "Open a ticket for order 4417")
        assert isinstance(ticket, Ticket), method


async def test_litellm(system: System) -> None:
    import litellm

    done = await litellm.acompletion(model=f"openai/{MODEL}", api_base=f"{system.url}/v1",
                                     api_key=system.key, messages=[
                                         {"role": "user", "content": "hi"}], num_retries=0)
    assert done.choices[0].message.content.startswith(LABEL)
    assert done.usage.completion_tokens > 0
    called = await litellm.acompletion(model=f"openai/{MODEL}", api_base=f"{system.url}/v1",
                                       api_key=system.key, tools=[ORDER_TOOL], messages=[
                                           {"role": "user", "content": "Where is 4417?"}])
    assert called.choices[0].message.tool_calls[0].function.name == "look_up_order"


async def test_every_v1_answer_and_chunk_conforms(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.key}"}
    hi = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(base_url=system.url, headers=auth, timeout=60) as http:
        async def chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                return [json.loads(line[6:]) async for line in r.aiter_lines()
                        if line.startswith("data: {")]

        for body in ({"messages": hi, "max_tokens": 5}, {"messages": hi},
                     {"messages": hi, "tools": [ORDER_TOOL]},
                     {"messages": hi, "response_format": {"type": "json_object"}}):
            r = await http.post("/v1/chat/completions", json={"model": MODEL, **body})
            assert r.status_code == 200
            conforms("CreateChatCompletionResponse", r.json())
            for chunk in await chunks({"model": MODEL, "stream": True,
                                       "stream_options": {"include_usage": True}, **body}):
                conforms("CreateChatCompletionStreamResponse", chunk)
        conforms("ListModelsResponse", (await http.get("/v1/models")).json())
        conforms("Model", (await http.get(f"/v1/models/{MODEL}")).json())
        for bad in ({"model": MODEL, "messages": []}, {"model": "gpt-4o", "messages": hi},
                    {"model": MODEL, "messages": hi, "logprobs": True}):
            r = await http.post("/v1/chat/completions", json=bad)
            assert 400 <= r.status_code < 500
            conforms("ErrorResponse", r.json())


async def test_instructor_tools_and_json_schema_on_the_first_request(system: System) -> None:
    import instructor

    counted: list[int] = []

    async def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            counted.append(1)

    http = httpx.AsyncClient(event_hooks={"request": [count]}, timeout=60)
    raw = openai.AsyncOpenAI(base_url=f"{system.url}/v1", api_key=system.key, max_retries=0,
                             http_client=http)
    for mode in (instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA):
        counted.clear()
        client = instructor.from_openai(raw, mode=mode)
        ticket = await client.chat.completions.create(
            model=MODEL, response_model=Ticket, max_retries=1,
            messages=[{"role": "user", "content": "Open a ticket for order 4417"}])
        assert isinstance(ticket, Ticket) and len(counted) == 1, mode
    await http.aclose()
