from __future__ import annotations

import pickle
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from app.auth.siwe import (
    MAX_MESSAGE_LENGTH,
    SiweError,
    SiweMessage,
    check_message,
    format_time,
    new_nonce,
    parse_message,
    personal_sign_hash,
    recover_signer,
    verify_eoa_signature,
)

UTC = timezone.utc
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

ALICE = Account.from_key("0x" + "11" * 32)
BOB = Account.from_key("0x" + "22" * 32)
WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"  # the address in the EIP-4361 examples

T0 = datetime(2026, 11, 26, 6, 0, 0, tzinfo=UTC)


def minimal(**overrides: object) -> SiweMessage:
    fields: dict[str, object] = dict(
        domain="mia.example",
        address=ALICE.address,
        uri="https://mia.example/auth",
        version="1",
        chain_id=1,
        nonce="abcdEFGH1234",
        issued_at=T0,
    )
    fields.update(overrides)
    return SiweMessage(**fields)  # type: ignore[arg-type]


def full(**overrides: object) -> SiweMessage:
    fields: dict[str, object] = dict(
        scheme="https",
        statement="Sign in to the MIA network.",
        expiration_time=T0 + timedelta(minutes=10),
        not_before=T0 - timedelta(minutes=1),
        request_id="req-42",
        resources=("ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
                   "https://mia.example/tos"),
    )
    fields.update(overrides)
    return minimal(**fields)


def sign(text: str, account=ALICE) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=text), account.key).signature.hex()


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(SiweError) as info:
        fn(*args, **kwargs)
    assert info.value.reason and isinstance(info.value.reason, str)
    return info.value.code


# --- exact text -------------------------------------------------------------------------------

FULL_TEXT = (
    "https://mia.example wants you to sign in with your Ethereum account:\n"
    f"{ALICE.address}\n"
    "\n"
    "Sign in to the MIA network.\n"
    "\n"
    "URI: https://mia.example/auth\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: abcdEFGH1234\n"
    "Issued At: 2026-11-26T06:00:00.000Z\n"
    "Expiration Time: 2026-11-26T06:10:00.000Z\n"
    "Not Before: 2026-11-26T05:59:00.000Z\n"
    "Request ID: req-42\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://mia.example/tos"
)

# No statement: the ABNF gives address LF LF LF "URI: " (two empty lines), and no trailing LF.
MINIMAL_TEXT = (
    "mia.example wants you to sign in with your Ethereum account:\n"
    f"{ALICE.address}\n"
    "\n"
    "\n"
    "URI: https://mia.example/auth\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: abcdEFGH1234\n"
    "Issued At: 2026-11-26T06:00:00.000Z"
)

EIP_EXAMPLE = (
    "example.com wants you to sign in with your Ethereum account:\n"
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n"
    "\n"
    "I accept the ExampleOrg Terms of Service: https://example.com/tos\n"
    "\n"
    "URI: https://example.com/login\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: 32891756\n"
    "Issued At: 2021-09-30T16:25:24Z\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://example.com/my-web2-claim.json"
)


def test_full_message_text_is_exact() -> None:
    assert full().to_text() == FULL_TEXT


def test_minimal_message_text_is_exact() -> None:
    assert minimal().to_text() == MINIMAL_TEXT


def test_parse_known_texts() -> None:
    assert parse_message(FULL_TEXT) == full()
    assert parse_message(MINIMAL_TEXT) == minimal()


@pytest.mark.parametrize("origin", ["example.com", "example.com:3388", "https://example.com"])
def test_parse_eip_examples(origin: str) -> None:
    m = parse_message(EIP_EXAMPLE.replace("example.com wants", f"{origin} wants", 1))
    assert m.address == WETH
    assert m.statement == "I accept the ExampleOrg Terms of Service: https://example.com/tos"
    assert m.issued_at == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert m.resources == ("ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
                           "https://example.com/my-web2-claim.json")
    if origin.startswith("https://"):
        assert (m.scheme, m.domain) == ("https", "example.com")
    else:
        assert (m.scheme, m.domain) == (None, origin)


# --- round trip --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "msg",
    [
        minimal(),
        full(),
        minimal(statement=""),
        minimal(request_id=""),
        minimal(resources=("urn:isbn:0451450523",)),
        minimal(scheme="http", domain="user:pw@127.0.0.1:8000"),
        minimal(domain="[::1]:8000", uri="http://[::1]:8000/"),
        minimal(chain_id=0),
        minimal(chain_id=2**256 - 1),
        minimal(issued_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        minimal(issued_at=datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=UTC)),
        minimal(version="2"),
        full(statement="a-z A-Z 0-9 -._~ :/?#[]@ !$&'()*+,;="),
        full(uri="did:pkh:eip155:1:0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"),
    ],
)
def test_round_trip(msg: SiweMessage) -> None:
    assert parse_message(msg.to_text()) == msg
    assert parse_message(msg.to_text()).to_text() == msg.to_text()


def test_datetimes_are_normalised_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    m = minimal(issued_at=datetime(2026, 11, 26, 8, 0, tzinfo=plus2))
    assert m.issued_at == T0 and m.issued_at.tzinfo is UTC
    assert m.to_text() == MINIMAL_TEXT


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2026-11-26T06:00:00Z", T0),
        ("2026-11-26t06:00:00z", T0),
        ("2026-11-26T08:30:00+02:30", T0),
        ("2026-11-26T01:00:00-05:00", T0),
        ("2026-11-26T06:00:00-00:00", T0),
        ("2026-11-26T06:00:00.5Z", T0.replace(microsecond=500000)),
        ("2026-11-26T06:00:00.123456789Z", T0.replace(microsecond=123456)),
    ],
)
def test_rfc3339_variants(raw: str, expected: datetime) -> None:
    m = parse_message(MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", raw))
    assert m.issued_at == expected
    assert m.issued_at.tzinfo is UTC


def test_format_time() -> None:
    assert format_time(T0) == "2026-11-26T06:00:00.000Z"
    assert format_time(T0.replace(microsecond=1000)) == "2026-11-26T06:00:00.001Z"
    assert format_time(T0.replace(microsecond=1)) == "2026-11-26T06:00:00.000001Z"
    assert format_time(datetime(2026, 11, 26, 7, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-11-26T06:00:00.000Z"
    )
    with pytest.raises(ValueError):
        format_time(datetime(2026, 11, 26))


def test_new_nonce() -> None:
    nonces = {new_nonce() for _ in range(200)}
    assert len(nonces) == 200
    for n in nonces:
        assert len(n) >= 16 and n.isascii() and n.isalnum()
    assert parse_message(minimal(nonce=new_nonce()).to_text()).nonce != "abcdEFGH1234"


# --- malformed messages -------------------------------------------------------------------------

ADDR_LINE = ALICE.address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        MINIMAL_TEXT + "\n",  # trailing LF
        MINIMAL_TEXT.replace("\n", "\r\n"),
        MINIMAL_TEXT + "\nFoo: bar",
        MINIMAL_TEXT + "\nResources:\n- not a uri",
        MINIMAL_TEXT + "\nResources:\n-https://x.example",
        MINIMAL_TEXT + "\nRequest ID: has space",
        MINIMAL_TEXT + "\nNot Before: 2026-11-26T06:00:00Z\nExpiration Time: 2026-11-26T06:00:00Z",
        MINIMAL_TEXT + "\nExpiration Time: 2026-11-26T06:00:00Z\nExpiration Time: 2026-11-26T06:00:00Z",
        MINIMAL_TEXT.replace("\n\n\nURI", "\n\nURI"),  # one blank line instead of two
        MINIMAL_TEXT.replace("\n\n\nURI", "\n\n\n\n\nURI"),
        MINIMAL_TEXT.replace("\n\n\nURI", "\n\nhello\nURI"),  # statement without its blank line
        MINIMAL_TEXT.replace("\n\n\nURI", "\n\nhello\nworld\n\nURI"),  # two-line statement
        MINIMAL_TEXT.replace("\n\n\nURI", '\n\nsay "hi"\n\nURI'),  # '"' is not in the ABNF
        MINIMAL_TEXT.replace("\n\n\nURI", "\n\n100% sure\n\nURI"),
        MINIMAL_TEXT.replace("Version: 1\nChain ID: 1", "Chain ID: 1\nVersion: 1"),
        MINIMAL_TEXT.replace("URI: ", "Uri: "),
        MINIMAL_TEXT.replace("URI: ", "URI:"),
        MINIMAL_TEXT.replace("URI: https://mia.example/auth", "URI: not a uri"),
        MINIMAL_TEXT.replace("URI: https://mia.example/auth", "URI: /relative"),
        MINIMAL_TEXT.replace("URI: https://mia.example/auth", "URI: https://mia.example/a b"),
        MINIMAL_TEXT.replace("URI: https://mia.example/auth", "URI: https://mia.example/%zz"),
        MINIMAL_TEXT.replace("URI: https://mia.example/auth", "URI: https://[::g]/"),
        MINIMAL_TEXT.replace("URI: https://mia.example/auth", "URI: https://x.example/#a#b"),
        MINIMAL_TEXT.replace("Version: 1", "Version: 1.0"),
        MINIMAL_TEXT.replace("Version: 1", "Version: "),
        MINIMAL_TEXT.replace("Chain ID: 1", "Chain ID: 01"),
        MINIMAL_TEXT.replace("Chain ID: 1", "Chain ID: -1"),
        MINIMAL_TEXT.replace("Chain ID: 1", "Chain ID: 0x1"),
        MINIMAL_TEXT.replace("Chain ID: 1", "Chain ID: " + "9" * 5000),
        MINIMAL_TEXT.replace("Nonce: abcdEFGH1234", "Nonce: abc123"),
        MINIMAL_TEXT.replace("Nonce: abcdEFGH1234", "Nonce: abcd-EFGH-1234"),
        MINIMAL_TEXT.replace("Nonce: abcdEFGH1234", "Nonce: abcdEFGH1234 "),
        MINIMAL_TEXT.replace("Nonce: abcdEFGH1234", "Nonce: \u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668"),
        MINIMAL_TEXT.replace(".000Z", ""),
        MINIMAL_TEXT.replace(".000Z", ".Z"),
        MINIMAL_TEXT.replace("T06:00:00.000Z", " 06:00:00.000Z"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "2026-13-26T06:00:00Z"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "2026-02-30T06:00:00Z"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "2026-12-31T23:59:60Z"),  # leap second
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "0000-01-01T00:00:00Z"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "9999-12-31T23:59:59-23:59"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "0001-01-01T00:00:00+01:00"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "2026-11-26T06:00:00+24:00"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "2026-11-26T06:00:00+0100"),
        MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "1764136800"),
        MINIMAL_TEXT.replace(ADDR_LINE, ADDR_LINE.lower()),
        MINIMAL_TEXT.replace(ADDR_LINE, "0x" + ADDR_LINE[2:].upper()),
        MINIMAL_TEXT.replace(ADDR_LINE, ADDR_LINE.swapcase().replace("0X", "0x")),
        MINIMAL_TEXT.replace(ADDR_LINE, ADDR_LINE[:-1]),
        MINIMAL_TEXT.replace(ADDR_LINE, "0X" + ADDR_LINE[2:]),
        MINIMAL_TEXT.replace(ADDR_LINE, "vitalik.eth"),
        MINIMAL_TEXT.replace("mia.example wants", "mia example wants"),
        MINIMAL_TEXT.replace("mia.example wants", " wants"),
        MINIMAL_TEXT.replace("mia.example wants", "https:// wants"),
        MINIMAL_TEXT.replace("mia.example wants", "1https://mia.example wants"),
        MINIMAL_TEXT.replace("mia.example wants", "https://mia.example/path wants"),
        MINIMAL_TEXT.replace("mia.example wants", "mia.example:80a wants"),
        MINIMAL_TEXT.replace("mia.example wants", "[::zz] wants"),
        MINIMAL_TEXT.replace("mia.example wants", "m\u00eda.example wants"),
        MINIMAL_TEXT.replace("wants you", "wants  you"),
        MINIMAL_TEXT.replace("Ethereum account:", "ethereum account:"),
        "x" * (MAX_MESSAGE_LENGTH + 1),
        MINIMAL_TEXT.replace("\n\n\nURI", "\n\n" + "a" * MAX_MESSAGE_LENGTH + "\n\nURI"),
        MINIMAL_TEXT + "\x00",
        "\ud800" + MINIMAL_TEXT,
    ],
)
def test_malformed_messages(text: str) -> None:
    assert code_of(parse_message, text) == "malformed_message"


@pytest.mark.parametrize("value", [None, b"bytes", 42, ["list"]])
def test_non_text_input_is_malformed(value: object) -> None:
    assert code_of(parse_message, value) == "malformed_message"


def test_lowercase_address_rejected_with_reason() -> None:
    with pytest.raises(SiweError) as info:
        parse_message(MINIMAL_TEXT.replace(ADDR_LINE, ADDR_LINE.lower()))
    assert info.value.code == "malformed_message"
    assert "EIP-55" in info.value.reason


def test_reason_never_echoes_input() -> None:
    with pytest.raises(SiweError) as info:
        parse_message(MINIMAL_TEXT.replace("abcdEFGH1234", "<script>alert(1)</script>"))
    assert "<script>" not in info.value.reason and "<script>" not in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(address=ALICE.address.lower()),
        dict(domain="bad domain"),
        dict(domain=""),
        dict(scheme="1http"),
        dict(uri="no-scheme"),
        dict(version="one"),
        dict(chain_id=True),
        dict(chain_id=-1),
        dict(chain_id=2**256),
        dict(chain_id="1"),
        dict(nonce="short"),
        dict(issued_at=datetime(2026, 11, 26)),
        dict(issued_at="2026-11-26T06:00:00Z"),
        dict(expiration_time=datetime(2026, 11, 26)),
        dict(statement="two\nlines"),
        dict(request_id="a b"),
        dict(resources=("ok:1", "not a uri")),
        dict(resources="https://x.example"),
        dict(statement="a" * MAX_MESSAGE_LENGTH),
    ],
)
def test_constructor_enforces_the_grammar(overrides: dict) -> None:
    assert code_of(minimal, **overrides) == "malformed_message"


def test_constructor_accepts_a_resource_list() -> None:
    m = minimal(resources=["https://a.example", "https://b.example"])
    assert m.resources == ("https://a.example", "https://b.example")
    assert parse_message(m.to_text()) == m


def test_empty_resources_section_is_accepted() -> None:
    assert parse_message(MINIMAL_TEXT + "\nResources:") == minimal()


# --- check_message ------------------------------------------------------------------------------

EXPECT = dict(domain="mia.example", uri="https://mia.example/auth", chain_id=1)


def test_check_accepts_a_good_message() -> None:
    check_message(full(), **EXPECT, now=T0)
    check_message(minimal(), **EXPECT, now=T0 + timedelta(days=365))


@pytest.mark.parametrize(
    "msg, expect, now, code",
    [
        (minimal(domain="evil.example"), {}, T0, "domain_mismatch"),
        (minimal(domain="mia.example:8443"), {}, T0, "domain_mismatch"),
        (minimal(scheme="http"), {}, T0, "domain_mismatch"),
        (minimal(), dict(uri="https://mia.example/other"), T0, "uri_mismatch"),
        (minimal(chain_id=5), {}, T0, "chain_id_mismatch"),
        (minimal(version="2"), {}, T0, "version_unsupported"),
        (minimal(expiration_time=T0), {}, T0 + timedelta(seconds=60), "expired"),
        (minimal(expiration_time=T0), {}, T0 + timedelta(hours=1), "expired"),
        (minimal(not_before=T0 + timedelta(seconds=61)), {}, T0, "not_yet_valid"),
        (minimal(issued_at=T0 + timedelta(seconds=61)), {}, T0, "issued_in_future"),
    ],
)
def test_check_codes(msg: SiweMessage, expect: dict, now: datetime, code: str) -> None:
    assert code_of(check_message, msg, **{**EXPECT, **expect}, now=now) == code


def test_check_skew_boundaries() -> None:
    # Inside the 60 s skew on each side: accepted.
    check_message(minimal(expiration_time=T0), **EXPECT, now=T0 + timedelta(seconds=59))
    check_message(minimal(not_before=T0 + timedelta(seconds=60)), **EXPECT, now=T0)
    check_message(minimal(issued_at=T0 + timedelta(seconds=60)), **EXPECT, now=T0)
    # No skew: the expiry instant itself is already expired.
    assert code_of(check_message, minimal(expiration_time=T0), **EXPECT, now=T0,
                   clock_skew_s=0) == "expired"


def test_check_refuses_a_message_issued_longer_ago_than_max_age() -> None:
    # no expiration time: before max_age_s only the nonce bounded a message signed in 2020
    old = minimal(issued_at=datetime(2020, 1, 1, tzinfo=UTC))
    check_message(old, **EXPECT, now=T0)  # the pure check without a bound, as EIP-4361 allows
    assert code_of(check_message, old, **EXPECT, now=T0, max_age_s=600) == "too_old"
    # the bound counts from Issued At, with the clock skew in the signer's favour
    msg = minimal(issued_at=T0)
    check_message(msg, **EXPECT, now=T0 + timedelta(seconds=660), max_age_s=600)
    assert code_of(check_message, msg, **EXPECT, now=T0 + timedelta(seconds=661),
                   max_age_s=600) == "too_old"
    # an expiration time far ahead does not lift it
    assert code_of(check_message, minimal(issued_at=T0, expiration_time=T0 + timedelta(days=9)),
                   **EXPECT, now=T0 + timedelta(hours=1), max_age_s=600) == "too_old"


def test_check_scheme_parameter() -> None:
    check_message(minimal(scheme="http"), **EXPECT, now=T0, scheme="http")
    check_message(minimal(scheme="https"), **EXPECT, now=T0)
    assert code_of(check_message, minimal(), **EXPECT, now=T0, scheme="http") == "domain_mismatch"


def test_check_rejects_naive_now_and_negative_skew() -> None:
    with pytest.raises(ValueError):
        check_message(minimal(), **EXPECT, now=datetime(2026, 11, 26))
    with pytest.raises(ValueError):
        check_message(minimal(), **EXPECT, now=T0, clock_skew_s=-1)


def test_check_compares_instants_across_offsets() -> None:
    plus5 = timezone(timedelta(hours=5))
    check_message(minimal(expiration_time=T0 + timedelta(minutes=2)), **EXPECT,
                  now=(T0 + timedelta(minutes=1)).astimezone(plus5), clock_skew_s=0)


# --- signatures ---------------------------------------------------------------------------------

def test_personal_sign_hash_matches_eip191() -> None:
    text = MINIMAL_TEXT
    data = text.encode()
    assert personal_sign_hash(text) == keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)
    assert len(personal_sign_hash("")) == 32
    # The length prefix counts UTF-8 bytes, not characters.
    assert personal_sign_hash("\u00e9") == keccak(b"\x19Ethereum Signed Message:\n2\xc3\xa9")
    assert code_of(personal_sign_hash, "\ud800") == "malformed_message"


def test_recover_signer_round_trip() -> None:
    text = full().to_text()
    sig = sign(text)
    assert recover_signer(text, sig) == ALICE.address
    assert recover_signer(text, sig[2:]) == ALICE.address
    assert recover_signer(text, sig.upper().replace("0X", "0x")) == ALICE.address
    raw = bytes.fromhex(sig[2:])
    assert recover_signer(text, raw) == ALICE.address
    assert recover_signer(text, bytearray(raw)) == ALICE.address
    # Some hardware wallets return v in {0, 1} instead of {27, 28}.
    assert recover_signer(text, raw[:64] + bytes([raw[64] - 27])) == ALICE.address


def test_verify_eoa_signature_ok() -> None:
    for msg in (minimal(), full()):
        text = msg.to_text()
        verify_eoa_signature(msg, text, sign(text))


def test_verify_accepts_a_non_canonical_signed_text() -> None:
    # The wallet signed a text with an offset; the check is over those exact bytes.
    text = MINIMAL_TEXT.replace("2026-11-26T06:00:00.000Z", "2026-11-26T07:00:00+01:00")
    msg = parse_message(text)
    assert msg == minimal()
    verify_eoa_signature(msg, text, sign(text))
    assert code_of(verify_eoa_signature, msg, msg.to_text(), sign(text)) == "address_mismatch"


def test_signature_by_another_key_is_address_mismatch() -> None:
    text = minimal().to_text()
    assert recover_signer(text, sign(text, BOB)) == BOB.address
    assert code_of(verify_eoa_signature, minimal(), text, sign(text, BOB)) == "address_mismatch"


def test_tampered_message_is_address_mismatch() -> None:
    original = full()
    text = original.to_text()
    sig = sign(text)
    tampered_text = text.replace("Chain ID: 1", "Chain ID: 7")
    tampered = parse_message(tampered_text)
    assert code_of(verify_eoa_signature, tampered, tampered_text, sig) == "address_mismatch"
    # A msg that is not what the text says is refused before any signature check.
    assert code_of(verify_eoa_signature, tampered, text, sig) == "malformed_message"


def test_message_for_bob_signed_by_alice_is_address_mismatch() -> None:
    msg = minimal(address=BOB.address)
    text = msg.to_text()
    assert code_of(verify_eoa_signature, msg, text, sign(text, ALICE)) == "address_mismatch"


def _sig_with(r: int, s: int, v: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def _good_rsv() -> tuple[int, int, int]:
    raw = bytes.fromhex(sign(MINIMAL_TEXT)[2:])
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]


@pytest.mark.parametrize(
    "make",
    [
        lambda: "",
        lambda: "0x",
        lambda: "0x1234",
        lambda: "zz" * 65,
        lambda: "0x" + "g" * 130,
        lambda: " 0x" + "00" * 65,
        lambda: "0x" + "00" * 65 + "\n",
        lambda: "0x" + "00" * 66,
        lambda: "0x" + "\u0661" * 130,
        lambda: b"",
        lambda: b"\x01" * 64,
        lambda: b"\x01" * 66,
        lambda: None,
        lambda: 12345,
        lambda: ["0x"],
        lambda: "0x" + "ab" * 10_000,
        # v outside {0, 1, 27, 28}
        lambda: _sig_with(*_good_rsv()[:2], 29),
        lambda: _sig_with(*_good_rsv()[:2], 2),
        lambda: _sig_with(*_good_rsv()[:2], 37),  # EIP-155 style v is for transactions only
        # r, s out of range
        lambda: _sig_with(0, _good_rsv()[1], 27),
        lambda: _sig_with(N, _good_rsv()[1], 27),
        lambda: _sig_with(2**256 - 1, _good_rsv()[1], 27),
        lambda: _sig_with(_good_rsv()[0], 0, 27),
        lambda: _sig_with(_good_rsv()[0], N // 2 + 1, 27),
        # The malleable twin (r, n - s, flipped v) of a valid signature: rejected by EIP-2.
        lambda: (lambda r, s, v: _sig_with(r, N - s, 55 - v))(*_good_rsv()),
        # r = 5 is not the x coordinate of a curve point: no key can be recovered.
        lambda: _sig_with(5, 1, 27),
        lambda: "0x" + "00" * 65,
        lambda: "0x" + "ff" * 65,
    ],
)
def test_malformed_signatures(make) -> None:
    assert code_of(recover_signer, MINIMAL_TEXT, make()) == "invalid_signature"
    assert code_of(verify_eoa_signature, minimal(), MINIMAL_TEXT, make()) == "invalid_signature"


# --- hostile input ------------------------------------------------------------------------------

_ALPHABET = (
    ["\n", "\r", " ", ":", "-", "0", "9", "a", "Z", "x", "/", "%", "#", "@", "[", "]", ".",
     "\x00", "\t", "\u00e9", "\u0661", "\u200b", "\ud800", "\U0001f600"]
)


def _mutate(rng: random.Random, text: str) -> str:
    op = rng.randrange(9)
    i = rng.randrange(len(text) + 1)
    if op == 0:
        return text[:i] + text[i + 1:]
    if op == 1:
        return text[:i] + rng.choice(_ALPHABET) + text[i:]
    if op == 2:
        return text[:i] + rng.choice(_ALPHABET) + text[i + 1:]
    lines = text.split("\n")
    j, k = rng.randrange(len(lines)), rng.randrange(len(lines))
    if op == 3:
        lines[j], lines[k] = lines[k], lines[j]
    elif op == 4:
        lines.insert(j, lines[k])
    elif op == 5:
        del lines[j]
    elif op == 6:
        return text[:i]
    elif op == 7:
        lines[j] = lines[j] * rng.choice([2, 50, 500])
    else:
        lines[j] = lines[j].swapcase()
    return "\n".join(lines)


def test_random_mutations_only_raise_siwe_error() -> None:
    rng = random.Random(4361)
    seeds = [MINIMAL_TEXT, FULL_TEXT, EIP_EXAMPLE]
    accepted = 0
    for _ in range(3000):
        text = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            text = _mutate(rng, text) or text
        try:
            msg = parse_message(text)
        except SiweError as exc:
            assert exc.code == "malformed_message"
            continue
        accepted += 1
        # Whatever is accepted is a valid message that survives re-serialisation.
        assert parse_message(msg.to_text()) == msg
    assert accepted > 0


def test_random_signatures_only_raise_siwe_error() -> None:
    rng = random.Random(191)
    good = sign(MINIMAL_TEXT)
    for _ in range(300):
        chars = list(good)
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(chars))
            chars[pos] = rng.choice("0123456789abcdefxX\u0661 ")
        sig = "".join(chars)
        try:
            signer = recover_signer(MINIMAL_TEXT, sig)
        except SiweError as exc:
            assert exc.code == "invalid_signature"
            continue
        if signer != ALICE.address:
            assert code_of(verify_eoa_signature, minimal(), MINIMAL_TEXT, sig) == "address_mismatch"


def test_huge_inputs_are_rejected_quickly() -> None:
    assert code_of(parse_message, "a" * 10_000_000) == "malformed_message"
    assert code_of(parse_message, "\n" * 8000) == "malformed_message"
    assert code_of(recover_signer, MINIMAL_TEXT, "0x" + "1" * 10_000_000) == "invalid_signature"


def test_siwe_error_pickles_and_prints() -> None:
    err = pickle.loads(pickle.dumps(SiweError("expired", "The message has expired.")))
    assert (err.code, err.reason) == ("expired", "The message has expired.")
    assert str(err) == "expired: The message has expired."


def test_replace_keeps_invariants() -> None:
    # dataclasses.replace re-runs validation, so a frozen message cannot be bent out of the grammar.
    assert replace(minimal(), nonce="ZZZZZZZZ").nonce == "ZZZZZZZZ"
    assert code_of(replace, minimal(), nonce="no") == "malformed_message"
