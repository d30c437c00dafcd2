from __future__ import annotations

from typing import Any

import pytest

from app.runpod import RunPodMalformedOutput, build_input, parse_output


def test_vllm_shape_concatenates_tokens_and_reads_usage() -> None:
    out = [{"choices": [{"tokens": ["Hello", " world"]}], "usage": {"input": 12, "output": 2}}]
    assert parse_output(out) == ("Hello world", 12, 2)


def test_vllm_streamed_batches_concatenate_and_last_usage_wins() -> None:
    out = [
        {"choices": [{"tokens": ["Hel", "lo"]}], "usage": {"input": 5, "output": 2}},
        {"choices": [{"tokens": [" there"]}], "usage": {"input": 5, "output": 3}},
    ]
    assert parse_output(out) == ("Hello there", 5, 3)


def test_vllm_without_usage_has_unknown_counts() -> None:
    assert parse_output([{"choices": [{"tokens": ["a"]}]}]) == ("a", None, None)


def test_text_shapes() -> None:
    assert parse_output({"text": "hi"}) == ("hi", None, None)
    assert parse_output({"text": "hi", "usage": {"input": 3, "output": 1}}) == ("hi", 3, 1)
    assert parse_output({"text": "hi", "input_tokens": 4, "output_tokens": 1}) == ("hi", 4, 1)
    assert parse_output({"text": "", "output_tokens": 0}) == ("", None, 0)


@pytest.mark.parametrize(
    "output",
    [
        None,
        "just a string",
        42,
        [],
        [None],
        [{"choices": []}],
        [{"choices": [{"text": "no tokens"}]}],
        [{"choices": [{"tokens": ["ok", 3]}]}],
        [{"choices": [{"tokens": ["ok"]}], "usage": {"input": 1, "output": 2.5}}],
        [{"choices": [{"tokens": ["ok"]}], "usage": {"input": 1, "output": True}}],
        [{"choices": [{"tokens": ["ok"]}], "usage": {"input": -1, "output": 1}}],
        [{"choices": [{"tokens": ["ok"]}], "usage": "lots"}],
        {"generated": "x"},
        {"text": 5},
        {"text": "x", "output_tokens": "7"},
        {"text": "x", "usage": [1, 2]},
        {"error": "CUDA out of memory"},
    ],
)
def test_malformed_outputs_raise(output: Any) -> None:
    with pytest.raises(RunPodMalformedOutput) as info:
        parse_output(output)
    assert info.value.reason.startswith("malformed output")


def test_worker_error_output_mentions_error_text() -> None:
    with pytest.raises(RunPodMalformedOutput, match="CUDA out of memory"):
        parse_output({"error": "CUDA out of memory"})


def test_build_input() -> None:
    assert build_input("hi", 8) == {"prompt": "hi", "sampling_params": {"max_tokens": 8}}
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError):
            build_input("hi", bad)  # type: ignore[arg-type]
