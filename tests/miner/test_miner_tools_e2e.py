"""Tool calls and structured output end to end (issue 22): the official openai SDK against the
real coordinator, mia-miner probing the demo model once and declaring what it can do, the demo
model calling tools and answering JSON deterministically."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from miner.demo_model import LABEL
from tests.miner.support import RunningMiner
from tests.miner.test_miner_v1_e2e import sdk, until_served

pytestmark = pytest.mark.timeout(120)

ORDER_TOOL = {"type": "function", "function": {
    "name": "look_up_order", "description": "the status of an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}},
                   "required": ["order_id"]}}}


class Ticket(BaseModel):
    title: str
    priority: int
    tags: list[str]


async def test_tools_and_structured_output_through_mia_miner(backend, demo_model) -> None:
    client = sdk(backend, await backend.api_key())
    async with RunningMiner(backend.url, demo_model.url) as m:
        await until_served(client, "mia-demo")
        assert m.miner.backend.capabilities == ("tools", "json_object", "json_schema")

        # structured output: the SDK's parse() gets a parsed object
        done = await client.chat.completions.parse(
            model="mia-demo", response_format=Ticket,
            messages=[{"role": "user", "content": "Open a ticket for my late order"}])
        assert isinstance(done.choices[0].message.parsed, Ticket)
        assert done.choices[0].finish_reason == "stop"

        # a tool call, then the tool's result, then the final answer
        ask = [{"role": "user", "content": "Where is order 4417?"}]
        first = await client.chat.completions.create(model="mia-demo", messages=ask,
                                                     tools=[ORDER_TOOL])
        assert first.choices[0].finish_reason == "tool_calls"
        call = first.choices[0].message.tool_calls[0]
        assert call.function.name == "look_up_order"
        assert json.loads(call.function.arguments) == {"order_id": 1}
        second = await client.chat.completions.create(model="mia-demo", tools=[ORDER_TOOL], messages=[
            *ask, first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "shipped on Monday"}])
        assert second.choices[0].message.content == f"{LABEL} The tool answered: shipped on Monday"

        # the same through streaming
        stream = await client.chat.completions.create(model="mia-demo", messages=ask,
                                                      tools=[ORDER_TOOL], stream=True)
        calls, finish = [], None
        async for chunk in stream:
            for choice in chunk.choices:
                calls += choice.delta.tool_calls or []
                finish = choice.finish_reason or finish
        assert finish == "tool_calls" and calls[0].function.name == "look_up_order"
        async with client.chat.completions.stream(
                model="mia-demo", response_format=Ticket,
                messages=[{"role": "user", "content": "Open a ticket"}]) as events:
            final = await events.get_final_completion()
        assert isinstance(final.choices[0].message.parsed, Ticket)
    assert m.miner.stats.completed == 5
