"""Pure units: prompt building, signing, backoff, wallet loading, configuration."""

from __future__ import annotations

import random

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from miner.backoff import Backoff
from miner.config import ConfigError, load_config
from miner.model import normalize_base_url
from miner.model import Sampling
from miner.prompt import build_messages, job_sampling, strict_alternation
from miner.wallet import Wallet, WalletError, recover_result_signer, result_digest

from tests.miner.support import TEST_KEY

ADDRESS = Account.from_key(TEST_KEY).address


# ---- prompt ---------------------------------------------------------------------------------

def test_prompt_context_history_and_prompt() -> None:
    job = {
        "prompt": "Where is my order?",
        "context": "You are ACME's support bot.",
        "history": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
        ],
    }
    assert build_messages(job) == [
        {"role": "system", "content": "You are ACME's support bot."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Where is my order?"},
    ]


def test_prompt_not_repeated_when_history_already_ends_with_it() -> None:
    job = {"prompt": "Q2", "context": None,
           "history": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                       {"role": "user", "content": "Q2"}]}
    assert build_messages(job) == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]


def test_prompt_merges_an_unanswered_earlier_question() -> None:
    job = {"prompt": "Hello??", "history": [{"role": "user", "content": "Q1"},
                                            {"role": "assistant", "content": "A1"},
                                            {"role": "user", "content": "Hello?"}]}
    assert build_messages(job)[-2:] == [
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Hello?\n\nHello??"},
    ]


def test_prompt_blank_context_and_missing_history() -> None:
    assert build_messages({"prompt": "hello", "context": "   "}) == [{"role": "user", "content": "hello"}]
    assert build_messages({"prompt": "hello", "history": None}) == [{"role": "user", "content": "hello"}]


def test_prompt_same_text_as_assistant_turn_is_still_sent() -> None:
    job = {"prompt": "ok", "history": [{"role": "assistant", "content": "ok"}]}
    assert build_messages(job)[-1] == {"role": "user", "content": "ok"}
    assert len(build_messages(job)) == 2


def test_strict_alternation_folds_system_and_merges_turns() -> None:
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "A0"},
        {"role": "user", "content": "U1"},
        {"role": "user", "content": "U2"},
    ]
    out = strict_alternation(msgs)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"] == "S"
    assert out[2]["content"] == "U1\n\nU2"
    out = strict_alternation([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert out == [{"role": "user", "content": "S\n\nU"}]


def test_job_sampling_takes_what_the_client_asked_and_ignores_nonsense() -> None:
    job = {"temperature": 0, "top_p": 0.9, "stop": ["\n\nUser:", "END"], "max_tokens": 9}
    assert job_sampling(job) == Sampling(temperature=0.0, top_p=0.9, stop=("\n\nUser:", "END"))
    # older backends send none of them; nulls and ill-typed values leave the defaults
    assert job_sampling({"prompt": "hi"}) == Sampling()
    assert job_sampling({"temperature": None, "top_p": None, "stop": None}) == Sampling()
    assert job_sampling({"temperature": True, "top_p": "0.5", "stop": [1, ""]}) == Sampling()
    assert job_sampling({"stop": "END"}).stop == ("END",)


def test_declarable_model_names() -> None:
    from miner.runner import Miner

    for name in ("mia-demo", "mixtral:latest", "mistralai/Mixtral-8x7B-Instruct-v0.1",
                 "/models/q4_k_m.gguf", "org/model@rev+1"):
        assert Miner._declarable(name) == name
    for name in ("my model", "x" * 129, "", None, "naïve"):
        assert Miner._declarable(name) is None


# ---- signing --------------------------------------------------------------------------------

def test_result_signature_recovers_to_wallet() -> None:
    w = Wallet.from_private_key(TEST_KEY)
    job_id, output = "3f1c0a9e-job", "Your order ships tomorrow. ✓ ünïcödé"
    sig = w.sign_result(job_id, output)
    assert sig.startswith("0x") and len(sig) == 132
    assert recover_result_signer(job_id, output, sig) == ADDRESS
    # The digest is exactly keccak256(utf8(job_id) || utf8(output)), signed with EIP-191.
    from eth_utils import keccak
    assert result_digest(job_id, output) == keccak(job_id.encode() + output.encode())
    assert Account.recover_message(encode_defunct(primitive=keccak((job_id + output).encode())),
                                   signature=sig) == ADDRESS
    assert recover_result_signer(job_id, output + " ", sig) != ADDRESS


def test_sign_in_signature_is_personal_sign_of_text() -> None:
    w = Wallet.from_private_key(TEST_KEY[2:])  # without 0x as well
    msg = f"127.0.0.1:8000 wants you to sign in with your Ethereum account:\n{ADDRESS}\n\nNonce: abc"
    sig = w.sign_text(msg)
    assert Account.recover_message(encode_defunct(text=msg), signature=sig) == ADDRESS


def test_wallet_never_shows_the_key() -> None:
    w = Wallet.from_private_key(TEST_KEY)
    for text in (repr(w), str(w), f"{w}"):
        assert TEST_KEY[2:] not in text and ADDRESS in text
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(w)


@pytest.mark.parametrize("bad", ["", "0x1234", "zz" * 32, "0x" + "00" * 32, "1" * 65])
def test_bad_private_key_message_does_not_echo_it(bad: str) -> None:
    with pytest.raises(WalletError) as ei:
        Wallet.from_private_key(bad)
    if len(bad) > 6:
        assert bad.removeprefix("0x") not in str(ei.value)


def test_keystore_roundtrip_and_wrong_password(tmp_path) -> None:
    path = tmp_path / "wallet.json"
    address = Wallet.write_keystore(path, "correct horse")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert Wallet.from_keystore(path, "correct horse").address == address
    with pytest.raises(WalletError, match="password"):
        Wallet.from_keystore(path, "wrong")
    with pytest.raises(WalletError, match="does not exist"):
        Wallet.from_keystore(tmp_path / "missing.json", "x")
    with pytest.raises(WalletError, match="refusing"):
        Wallet.write_keystore(path, "again")


# ---- backoff --------------------------------------------------------------------------------

def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(base=0.5, cap=30, rng=random.Random(7))
    delays = [b.fail() for _ in range(12)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(30.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 30
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # jitter: capped delays still differ
    b.reset()
    assert 0.25 <= b.fail() <= 0.5
    for _ in range(10_000):  # no overflow after a very long outage
        b.fail()
    assert b.ceiling() == 30


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=5, cap=1)


# ---- configuration --------------------------------------------------------------------------

def test_config_from_env_and_flags_win() -> None:
    env = {
        "MIA_BACKEND_URL": "http://127.0.0.1:9000/",
        "MIA_MINER_PRIVATE_KEY": TEST_KEY,
        "MIA_MODEL_URL": "http://127.0.0.1:11434",
        "MIA_MODEL_NAME": "mixtral",
        "MIA_MINER_CONCURRENCY": "4",
        "MIA_MINER_MAX_TOKENS": "300",
        "MIA_MINER_ACCEPT_IDLE": "yes",
        "MIA_MINER_BATCH": "OFF",
        "MIA_MINER_BATCH_WINDOW_MS": "50",
    }
    cfg = load_config([], env)
    assert (cfg.batch, cfg.batch_window_ms) == ("off", 50)
    cfg = load_config(["--batch", "auto", "--batch-window", "5"], env)
    assert (cfg.batch, cfg.batch_window_ms) == ("auto", 5)
    assert cfg.backend_url == "http://127.0.0.1:9000"
    assert (cfg.model, cfg.concurrency, cfg.max_tokens, cfg.accept_idle) == ("mixtral", 4, 300, True)
    cfg = load_config(["--concurrency", "8", "--no-accept-idle", "--model", "llama3"], env)
    assert (cfg.concurrency, cfg.accept_idle, cfg.model) == (8, False, "llama3")
    assert TEST_KEY not in repr(cfg) and TEST_KEY[2:] not in repr(cfg)


def test_config_defaults() -> None:
    cfg = load_config([], {})
    assert cfg.backend_url == "http://127.0.0.1:8000"
    assert cfg.concurrency == 1 and cfg.accept_idle is False and cfg.model is None
    assert cfg.poll_wait == 10 and cfg.temperature == 0.0
    assert cfg.batch == "auto" and cfg.batch_window_ms == 20


@pytest.mark.parametrize(
    "argv, env, words",
    [
        (["--concurrency", "0"], {}, "concurrency"),
        (["--concurrency", "two"], {}, "whole number"),
        (["--poll-wait", "31"], {}, "poll wait"),
        ([], {"MIA_MINER_ACCEPT_IDLE": "maybe"}, "yes or no"),
        (["--backend", "127.0.0.1:8000"], {}, "http://"),
        (["--private-key", TEST_KEY, "--keystore", "k.json"], {}, "not both"),
        (["--log-level", "loud"], {}, "log level"),
        ([], {"MIA_MINER_BATCH": "sometimes"}, "auto or off"),
        (["--batch-window", "-1"], {}, "batch window"),
    ],
)
def test_config_errors_are_plain(argv, env, words) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(argv, env)


def test_password_file(tmp_path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = load_config(["--keystore", "k.json", "--keystore-password-file", str(pw)], {})
    assert cfg.keystore_password == "s3cret" and "s3cret" not in repr(cfg)


def test_model_url_normalization() -> None:
    for u in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert normalize_base_url(u) == "http://h:8000/v1"


def test_log_filter_masks_secrets_that_reach_a_log_line() -> None:
    import logging

    from miner.cli import _Redact, _secrets
    from miner.config import MinerConfig

    cfg = MinerConfig(private_key=TEST_KEY, model_api_key="sk-model-secret-123")
    f = _Redact(_secrets(cfg))
    for msg, args in ((f"oops {TEST_KEY}", ()), ("oops %s", (TEST_KEY[2:],)),
                      ("key=%s", ("sk-model-secret-123",))):
        rec = logging.LogRecord("miner", logging.INFO, __file__, 1, msg, args, None)
        assert f.filter(rec)
        out = rec.getMessage()
        assert TEST_KEY[2:] not in out and "sk-model-secret-123" not in out and "***" in out
