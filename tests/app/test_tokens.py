"""app/tokens.py: the server's token count, exact, offline, loaded once per process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from app import tokens
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# a support answer of 644 characters: 189 tokens to Mixtral's tokenizer, 124 words
ANSWER = ("Thank you for reaching out! Our store is open Monday to Friday from 9am to 6pm, and "
          "on Saturdays from 10am to 4pm. We are closed on Sundays and public holidays. ") * 4


def test_mixtral_counts_exactly() -> None:
    count = tokens.counter("mistral-v1")
    assert count("It began in 1789.") == 9
    assert count("x") == 1 and count("") == 0
    assert count("x" * 4096) < 4096  # tokens, not characters
    assert count(ANSWER) == 189 and len(ANSWER.split()) == 124
    assert tokens.counter("mistral-v1") is count  # loaded once per process


def test_words_needs_no_tokenizer() -> None:
    assert tokens.count_now("words", "  It began\nin 1789. ") == 4
    assert tokens.count_now("words", "") == 0


def test_an_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(ValidationError, match="tokenizer"):
        Settings(_env_file=None, tokenizer="gpt-2")  # type: ignore[call-arg,arg-type]
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokens.count_now("gpt-2", "x")


def test_long_outputs_are_counted_off_the_event_loop_with_the_same_result() -> None:
    long = ANSWER * 100  # ~60 kB: counted in a thread
    assert len(long) > tokens.INLINE_CHARS
    assert asyncio.run(tokens.count("mistral-v1", long)) == tokens.count_now("mistral-v1", long)
    assert asyncio.run(tokens.count("mistral-v1", "It began in 1789.")) == 9


def test_every_named_tokenizer_loads_without_a_network() -> None:
    """Each one loads from the installed package with sockets disabled: nothing is fetched."""
    script = ("import socket\n"
              "def refuse(*a, **k): raise OSError('no network in this test')\n"
              "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
              "from app import tokens\n"
              "for name in tokens.TOKENIZERS:\n"
              "    assert tokens.count_now(name, 'It began in 1789.') > 0, name\n"
              "print('ok', len(tokens.TOKENIZERS))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"ok {len(tokens.TOKENIZERS)}"


def test_warm_loads_in_the_background() -> None:
    name = "mistral-v2"
    started = time.perf_counter()
    tokens.warm(name)
    returned_after = time.perf_counter() - started
    deadline = time.monotonic() + 60
    while name not in tokens._loaded and time.monotonic() < deadline:
        time.sleep(0.02)
    assert name in tokens._loaded and returned_after < 0.1  # did not wait for the load
    tokens.warm(name)  # already loaded: nothing to do
    assert tokens.count_now(name, "It began in 1789.") == 9
