"""Tool calls and structured output through the job to miners that declare them (issue 22
point 1), with simulated miners: routing by capability, the 400 when no miner can, tool calls
back to the client (whole and streamed), and structured answers vetted before the client sees
them, an invalid one answered by another miner."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from app.models import ChatJob
from tests.openai_api.support import MODEL, v1_app

pytestmark = pytest.mark.timeout(90)
ORDER_TOOL = {"type": "function", "function": {
    "name": "look_up_order", "description": "an order's status",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}},
                   "required": ["order_id"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "Where is order 4417?"}]


class Ticket(BaseModel):
    title: str
    priority: int


def calls(*pairs: tuple[str, dict[str, Any]]) -> str:
    return orjson.dumps([{"id": f"call_{i}", "type": "function", "function": {
        "name": name, "arguments": orjson.dumps(args).decode()}}
        for i, (name, args) in enumerate(pairs)]).decode()


async def jobs_in(v1: Any) -> int:
    async with v1.api.ctx.db.reads() as session:
        return int((await session.execute(select(func.count()).select_from(ChatJob))).scalar())


async def test_a_capability_no_miner_declares_is_a_400_and_no_job(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory()) as v1:
        await v1.miner()  # serves the model, plain chat only
        sdk = v1.sdk()
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=ASK, tools=[ORDER_TOOL])
        assert caught.value.code == "unsupported_parameter" and caught.value.param == "tools"
        assert "tool calling" in caught.value.message
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.parse(model=MODEL, messages=ASK, response_format=Ticket)
        assert caught.value.param == "response_format"
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=ASK, logprobs=True)
        assert caught.value.param == "logprobs"
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model=MODEL, messages=ASK, functions=[
                ORDER_TOOL["function"]])
        assert caught.value.param == "functions"
        assert await jobs_in(v1) == 0


async def test_tool_calls_go_to_capable_miners_and_come_back(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(any_db)) as v1:
        plain = await v1.miner()
        able = await v1.miner(capabilities="tools,json_schema")
        sdk = v1.sdk()
        ask = asyncio.create_task(sdk.chat.completions.create(
            model=MODEL, messages=ASK, tools=[ORDER_TOOL], tool_choice="auto"))
        assert await plain.poll(1) is None  # a miner without tools never sees the job
        job = await able.poll()
        assert job is not None and job["model"] == MODEL
        assert job["tools"] == [ORDER_TOOL] and job["tool_choice"] == "auto"
        assert job["messages"] == [{"role": "user", "content": "Where is order 4417?"}]
        await able.finish(job, calls(("look_up_order", {"order_id": 4417})), "tool_calls")
        done = await ask
        choice = done.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]
        assert call.function.name == "look_up_order"
        assert orjson.loads(call.function.arguments) == {"order_id": 4417}
        assert done.usage.completion_tokens > 5  # the call's tokens count like other output

        # the tool's result continues the conversation
        follow = [*ASK, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'}]
        ask = asyncio.create_task(sdk.chat.completions.create(
            model=MODEL, messages=follow, tools=[ORDER_TOOL]))
        job = await able.poll()
        assert [m["role"] for m in job["messages"]] == ["user", "assistant", "tool"]
        assert job["messages"][1]["tool_calls"][0]["id"] == call.id
        assert job["prompt"].startswith("[tool results]")
        await able.finish(job, "Order 4417 has shipped.", "stop")
        done = await ask
        assert done.choices[0].message.content == "Order 4417 has shipped."
        assert done.choices[0].finish_reason == "stop"

        # streamed: the calls come as delta.tool_calls, then finish_reason tool_calls
        async with httpx.AsyncClient(base_url=v1.url, timeout=30) as http:
            async def read() -> list[dict[str, Any]]:
                async with http.stream("POST", "/v1/chat/completions", json={
                        "model": MODEL, "messages": ASK, "tools": [ORDER_TOOL], "stream": True},
                        headers={"Authorization": f"Bearer {v1.key}"}) as resp:
                    return [orjson.loads(line[6:]) async for line in resp.aiter_lines()
                            if line.startswith("data: {")]
            reading = asyncio.create_task(read())
            job = await able.poll()
            assert job["stream"] is False  # vetted whole: nothing to stream
            await able.finish(job, calls(("look_up_order", {"order_id": 1}),
                                         ("look_up_order", {"order_id": 2})), "tool_calls")
            chunks = await reading
        deltas = [ch["delta"] for c in chunks for ch in c["choices"]]
        streamed = [tc for d in deltas for tc in d.get("tool_calls", ())]
        assert [tc["index"] for tc in streamed] == [0, 1]
        assert streamed[1]["function"] == {"name": "look_up_order",
                                           "arguments": '{"order_id":2}'}
        assert [ch["finish_reason"] for c in chunks for ch in c["choices"]][-1] == "tool_calls"


async def test_structured_output_is_vetted_and_a_bad_answer_goes_to_another_miner(settings_factory):  # type: ignore[no-untyped-def]
    async with v1_app(settings_factory(returned_job_cooldown_s=30)) as v1:
        sloppy = await v1.miner(capabilities="json_schema")
        good = await v1.miner(capabilities="json_schema,tools")
        ask = asyncio.create_task(v1.sdk().chat.completions.parse(
            model=MODEL, messages=ASK, response_format=Ticket))
        job = await sloppy.poll()
        assert job["response_format"]["type"] == "json_schema"
        for wrong in ('{"title": "late order"}', "not json at all"):
            r = await sloppy.result(job, wrong, "stop")
            assert r.status_code == 422 and r.json()["error"] == "invalid_output"
        # a tool call when none was offered is no answer either
        r = await sloppy.result(job, calls(("look_up_order", {"order_id": 1})), "tool_calls")
        assert r.status_code == 422
        r = await sloppy.sim.client.post(f"/job/{job['job_id']}/release", headers=sloppy.sim.auth,
                                         json={"lease_id": job["lease_id"],
                                               "reason": "result rejected: invalid_output"})
        assert r.status_code == 200 and r.json()["status"] == "queued"
        again = await good.poll()
        assert again["job_id"] == job["job_id"] and again["attempt"] == 2
        await good.finish(again, '{"title": "Late order 4417", "priority": 2}', "stop")
        done = await ask
        assert done.choices[0].message.parsed == Ticket(title="Late order 4417", priority=2)
