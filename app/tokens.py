"""Output tokens counted by the server: what idle jobs bill and what miners are credited.

A miner's own count is never billed (it could claim anything); the output it signed is counted
here with the tokenizer of the model the network serves, named by the TOKENIZER setting. The
Mistral tokenizers come from `mistral-common`, which ships their model files in its wheel: nothing
is downloaded at run time. Each tokenizer is loaded once per process, off the event loop:
importing mistral-common takes a second or more, so the API starts loading it in a background
thread at start-up (warm) without waiting for it, and a count that comes first waits in a thread.

Counts are exact integers: the output's tokens without BOS or EOS.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

# TOKENIZER values: the model family each one serves
TokenizerName = Literal["mistral-v1", "mistral-v2", "mistral-v3", "mistral-v3-tekken",
                        "mistral-v7", "words"]
TOKENIZERS: dict[str, str] = {
    "mistral-v1": "Mixtral 8x7B, Mistral 7B v0.1/v0.2 (sentencepiece, 32000 tokens)",
    "mistral-v2": "Mixtral 8x22B, Mistral Small/Large 2402 (sentencepiece)",
    "mistral-v3": "Mistral 7B v0.3, Codestral 22B (sentencepiece, 32768 tokens)",
    "mistral-v3-tekken": "Mistral NeMo (tekken, tiktoken-based)",
    "mistral-v7": "Mistral Large 2411 (sentencepiece)",
    "words": "whitespace-separated words; no dependency, for a model with another tokenizer",
}
# Below this many characters a count runs on the event loop (a few hundred microseconds);
# above, in a thread (sentencepiece releases the GIL): 100 kB of text takes ~0.2 s.
INLINE_CHARS = 4096

log = logging.getLogger(__name__)
Counter = Callable[[str], int]
_loaded: dict[str, Counter] = {}
_lock = threading.RLock()  # counter() loads through encoder(), under the same lock


def _words(text: str) -> int:
    return len(text.split())


def _load(name: str) -> Counter:
    if name == "words":
        return _words
    encode = encoder(name)
    return lambda text: len(encode(text))


Encoder = Callable[[str], Sequence[Hashable]]
_encoders: dict[str, Encoder] = {}


def encoder(name: str) -> Encoder:
    """The named tokenizer's encoder (text -> its tokens, without BOS or EOS), loaded once:
    what app/trust compares two answers on."""
    found = _encoders.get(name)
    if found is None:
        with _lock:
            found = _encoders.get(name)
            if found is None:
                found = _encoders[name] = _load_encoder(name)
    return found


async def encode(name: str, text: str) -> Sequence[Hashable]:
    """The tokens of `text`, off the event loop (tokenizing a long answer takes a while)."""
    return await asyncio.to_thread(lambda: encoder(name)(text))


def _load_encoder(name: str) -> Encoder:
    if name == "words":
        return str.split
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; one of {', '.join(TOKENIZERS)}")
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    version = name.removeprefix("mistral-")
    made = {"v1": MistralTokenizer.v1, "v2": MistralTokenizer.v2,
            "v3": MistralTokenizer.v3, "v3-tekken": lambda: MistralTokenizer.v3(is_tekken=True),
            "v7": MistralTokenizer.v7}[version]()
    encode = made.instruct_tokenizer.tokenizer.encode
    return lambda text: encode(text, bos=False, eos=False)


def counter(name: str) -> Counter:
    """The named tokenizer's counter, loaded on the first call in this process."""
    found = _loaded.get(name)
    if found is None:
        with _lock:  # two first calls at once load it once
            found = _loaded.get(name)
            if found is None:
                found = _loaded[name] = _load(name)
    return found


def warm(name: str) -> None:
    """Load the tokenizer in a background thread, so that the first result does not wait for
    it and start-up does not either. A failure is logged; the first count raises it again."""
    if name in _loaded:
        return

    def load() -> None:
        try:
            counter(name)
        except Exception:
            log.exception("could not load the %s tokenizer", name)

    threading.Thread(target=load, name=f"tokenizer-{name}", daemon=True).start()


def count_now(name: str, text: str) -> int:
    """Tokens of `text`, on the calling thread (loads the tokenizer if it is the first use)."""
    return counter(name)(text)


async def count(name: str, text: str) -> int:
    """Tokens of `text`; off the event loop whenever it could hold it up (loading, long text)."""
    found = _loaded.get(name)
    if found is not None and len(text) <= INLINE_CHARS:
        return found(text)
    return await asyncio.to_thread(count_now, name, text)
