"""Whether two answers to the same job agree, on the server's own tokens (app/tokens.py).

Greedy decoding of one model on different hardware (other GPUs, batch sizes, kernels) can part
after a while: a float rounding flips one argmax and the rest of the text follows another path.
So two answers agree if their first VERIFY_PREFIX_TOKENS tokens are equal (the part that
rarely diverges), or if their token sequences are at least VERIFY_MIN_SIMILARITY alike
(2 x matched / (len a + len b), difflib's ratio over tokens: a drift late in the answer keeps it
high; canned text, another model's words or a cut at 30 % do not).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from app.config import Settings
from app.tokens import encode


@dataclass(frozen=True)
class Verdict:
    agree: bool
    similarity: float  # 0..1
    prefix_equal: bool


def judge(a: Sequence[Hashable], b: Sequence[Hashable], prefix_tokens: int,
          min_similarity: float) -> Verdict:
    n = min(prefix_tokens, max(len(a), len(b)))
    prefix_equal = n > 0 and len(a) >= n and len(b) >= n and list(a[:n]) == list(b[:n])
    if not a and not b:
        similarity = 1.0
    else:
        similarity = SequenceMatcher(None, list(a), list(b), autojunk=False).ratio()
    # a shared prefix is agreement only if neither answer stops far short of the other
    # (truncation keeps the prefix)
    short, long = sorted((len(a), len(b)))
    whole = long == 0 or short / long >= min_similarity
    return Verdict(agree=(prefix_equal and whole) or similarity >= min_similarity,
                   similarity=round(similarity, 4), prefix_equal=prefix_equal)


async def compare(settings: Settings, a: str, b: str) -> Verdict:
    ta = await encode(settings.tokenizer, a)
    tb = await encode(settings.tokenizer, b)
    return judge(ta, tb, settings.verify_prefix_tokens, settings.verify_min_similarity)
