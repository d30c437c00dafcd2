"""EIP-4361 (Sign-In with Ethereum) messages: build, parse, check, and EIP-191 signer recovery.

Pure and synchronous: no I/O, no clock reads (callers pass ``now``), no nonce storage.
Contract-wallet (ERC-1271) verification is the caller's job; ``personal_sign_hash`` gives
the digest it needs.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from eth_account.messages import defunct_hash_message
from eth_keys import keys
from eth_keys.exceptions import BadSignature
from eth_keys.exceptions import ValidationError as KeysValidationError
from eth_utils import to_checksum_address

__all__ = [
    "MAX_MESSAGE_LENGTH",
    "SiweError",
    "SiweErrorCode",
    "SiweMessage",
    "check_message",
    "format_time",
    "new_nonce",
    "parse_message",
    "personal_sign_hash",
    "recover_signer",
    "verify_eoa_signature",
]

SiweErrorCode = Literal[
    "malformed_message",
    "domain_mismatch",
    "uri_mismatch",
    "chain_id_mismatch",
    "version_unsupported",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "too_old",
    "invalid_signature",
    "address_mismatch",
]

# Characters; a valid message is pure ASCII, so this is also its size in bytes.
MAX_MESSAGE_LENGTH = 8192

_HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_NONCE_ALPHABET = string.ascii_letters + string.digits
_NONCE_LENGTH = 22  # 22 base-62 characters ~ 131 bits of entropy

# RFC 3986 character classes, spelled out so that no Unicode letter or digit slips through.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_IP_LITERAL = rf"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+)\]"
_AUTHORITY_RE = re.compile(
    rf"(?:(?P<userinfo>{_USERINFO})@)?(?P<host>{_IP_LITERAL}|{_REG_NAME})(?::(?P<port>[0-9]*))?"
)
_PATH_QUERY_RE = re.compile(rf"(?:{_PCHAR}|[/?])*")
_URI_RE = re.compile(rf"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*):(?P<rest>[^#]*)(?:#(?P<fragment>.*))?", re.DOTALL)
_STATEMENT_RE = re.compile(rf"[{_UNRESERVED}:/?#\[\]@{_SUB_DELIMS} ]*")
_REQUEST_ID_RE = re.compile(rf"{_PCHAR}*")
_ADDRESS_RE = re.compile(r"0x[0-9A-Fa-f]{40}")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_VERSION_RE = re.compile(r"[0-9]{1,9}")
# Leading zeros are refused so that every accepted chain id has one spelling.
_CHAIN_ID_RE = re.compile(r"0|[1-9][0-9]{0,77}")
_DATETIME_RE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[Tt]"
    r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<frac>[0-9]+))?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))"
)
_SIG_HEX_RE = re.compile(r"(?:0[xX])?(?P<hex>[0-9A-Fa-f]{130})")


class SiweError(Exception):
    """A rejected sign-in. ``reason`` never echoes the input, so it is safe to send to a client."""

    code: SiweErrorCode
    reason: str

    def __init__(self, code: SiweErrorCode, reason: str) -> None:
        super().__init__(code, reason)  # args stay (code, reason) so the error pickles
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def _malformed(reason: str) -> SiweError:
    return SiweError("malformed_message", reason)


def _is_authority(value: str, *, require_host: bool) -> bool:
    m = _AUTHORITY_RE.fullmatch(value)
    if m is None:
        return False
    host = m.group("host")
    if require_host and not host:
        return False
    if host.startswith("[") and host[1:2] not in ("v", "V"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    return True


def _is_uri(value: str) -> bool:
    m = _URI_RE.fullmatch(value)
    if m is None:
        return False
    rest = m.group("rest")
    if rest.startswith("//"):
        end = len(rest)
        for sep in "/?":
            pos = rest.find(sep, 2)
            if pos != -1:
                end = min(end, pos)
        if not _is_authority(rest[2:end], require_host=False):
            return False
        rest = rest[end:]
    if _PATH_QUERY_RE.fullmatch(rest) is None:
        return False
    fragment = m.group("fragment")
    return fragment is None or _PATH_QUERY_RE.fullmatch(fragment) is not None


def _is_checksum_address(value: str) -> bool:
    return _ADDRESS_RE.fullmatch(value) is not None and to_checksum_address(value) == value


def _to_utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise _malformed(f"{name} must be a timezone-aware datetime")
    try:
        return value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise _malformed(f"{name} is out of range") from None


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; milliseconds, or microseconds when they are not whole ms."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("format_time needs a timezone-aware datetime")
    u = dt.astimezone(timezone.utc)
    frac = f"{u.microsecond // 1000:03d}" if u.microsecond % 1000 == 0 else f"{u.microsecond:06d}"
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{frac}Z"
    )


def _parse_time(name: str, value: str) -> datetime:
    m = _DATETIME_RE.fullmatch(value)
    if m is None:
        raise _malformed(f"{name} is not an RFC 3339 date-time")
    # Digits beyond microseconds cannot be represented; they are truncated, not rounded.
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    if m.group("z"):
        tz = timezone.utc
    else:
        oh, om = int(m.group("oh")), int(m.group("om"))
        if oh > 23 or om > 59:
            raise _malformed(f"{name} has an invalid UTC offset")
        offset = timedelta(hours=oh, minutes=om)
        tz = timezone(-offset if m.group("sign") == "-" else offset)
    try:
        # A leap second (:60) is valid RFC 3339 but not representable; it is refused here.
        local = datetime(
            int(m.group("y")),
            int(m.group("mo")),
            int(m.group("d")),
            int(m.group("h")),
            int(m.group("mi")),
            int(m.group("s")),
            int(frac),
            tzinfo=tz,
        )
        return local.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise _malformed(f"{name} is not a valid date-time") from None


@dataclass(frozen=True)
class SiweMessage:
    """One EIP-4361 message.

    Invariants, enforced at construction (SiweError "malformed_message" otherwise): every field
    matches the EIP-4361 ABNF, ``address`` is EIP-55 checksummed, datetimes are tz-aware and
    stored in UTC, and ``to_text()`` is at most MAX_MESSAGE_LENGTH characters, so
    ``parse_message(m.to_text()) == m`` always holds.
    """

    domain: str
    address: str
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()
    scheme: str | None = None

    def __post_init__(self) -> None:
        def is_str(v: object) -> bool:
            return isinstance(v, str)

        if self.scheme is not None and not (is_str(self.scheme) and _SCHEME_RE.fullmatch(self.scheme)):
            raise _malformed("scheme is not a valid URI scheme")
        if not (is_str(self.domain) and _is_authority(self.domain, require_host=True)):
            raise _malformed("domain is not a valid RFC 3986 authority")
        if not (is_str(self.address) and _is_checksum_address(self.address)):
            raise _malformed("address is not an EIP-55 checksummed Ethereum address")
        if self.statement is not None and not (
            is_str(self.statement) and _STATEMENT_RE.fullmatch(self.statement)
        ):
            raise _malformed("statement contains characters EIP-4361 does not allow")
        if not (is_str(self.uri) and _is_uri(self.uri)):
            raise _malformed("URI is not a valid RFC 3986 URI")
        if not (is_str(self.version) and _VERSION_RE.fullmatch(self.version)):
            raise _malformed("version must be a decimal number")
        if (
            not isinstance(self.chain_id, int)
            or isinstance(self.chain_id, bool)
            or not 0 <= self.chain_id < 2**256
        ):
            raise _malformed("chain ID must be an integer in [0, 2**256)")
        if not (is_str(self.nonce) and _NONCE_RE.fullmatch(self.nonce)):
            raise _malformed("nonce must be at least 8 ASCII letters or digits")
        object.__setattr__(self, "issued_at", _to_utc("issued-at", self.issued_at))
        if self.expiration_time is not None:
            object.__setattr__(
                self, "expiration_time", _to_utc("expiration-time", self.expiration_time)
            )
        if self.not_before is not None:
            object.__setattr__(self, "not_before", _to_utc("not-before", self.not_before))
        if self.request_id is not None and not (
            is_str(self.request_id) and _REQUEST_ID_RE.fullmatch(self.request_id)
        ):
            raise _malformed("request ID contains characters EIP-4361 does not allow")
        if not isinstance(self.resources, (tuple, list)):
            raise _malformed("resources must be a sequence of URIs")
        resources = tuple(self.resources)
        for resource in resources:
            if not (is_str(resource) and _is_uri(resource)):
                raise _malformed("a resource is not a valid RFC 3986 URI")
        object.__setattr__(self, "resources", resources)
        if len(self.to_text()) > MAX_MESSAGE_LENGTH:
            raise _malformed(f"message is longer than {MAX_MESSAGE_LENGTH} characters")

    def to_text(self) -> str:
        origin = f"{self.scheme}://{self.domain}" if self.scheme is not None else self.domain
        lines = [origin + _HEADER_SUFFIX, self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines.append("")
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {format_time(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {format_time(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {format_time(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {r}" for r in self.resources]
        return "\n".join(lines)


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.lines)

    def peek(self) -> str | None:
        return None if self.at_end() else self.lines[self.pos]

    def next(self, what: str) -> str:
        if self.at_end():
            raise _malformed(f"message ended before {what}")
        line = self.lines[self.pos]
        self.pos += 1
        return line

    def tagged(self, tag: str) -> str:
        line = self.next(f"the '{tag}' line")
        if not line.startswith(tag):
            raise _malformed(f"line {self.pos} must start with '{tag}'")
        return line[len(tag) :]

    def optional(self, tag: str) -> str | None:
        line = self.peek()
        if line is None or not line.startswith(tag):
            return None
        self.pos += 1
        return line[len(tag) :]


def parse_message(text: str) -> SiweMessage:
    """Strict EIP-4361 parser. Raises only SiweError("malformed_message") on bad input.

    Accepted beyond the canonical form that ``to_text`` writes (so the signed text need not
    equal ``to_text()``): UTC offsets, lowercase ``t``/``z``, any number of fractional digits
    (truncated to microseconds), an empty ``Resources:`` section.
    """
    if not isinstance(text, str):
        raise _malformed("message must be text")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise _malformed(f"message is longer than {MAX_MESSAGE_LENGTH} characters")
    if not text.isascii():
        raise _malformed("message must be ASCII")
    if "\r" in text:
        raise _malformed("lines must end with LF, not CRLF")

    lines = _Lines(text)
    header = lines.next("the header")
    if not header.endswith(_HEADER_SUFFIX):
        raise _malformed("line 1 must end with 'wants you to sign in with your Ethereum account:'")
    origin = header[: -len(_HEADER_SUFFIX)]
    scheme: str | None = None
    if "://" in origin:
        scheme, origin = origin.split("://", 1)
        if not _SCHEME_RE.fullmatch(scheme):
            raise _malformed("the scheme is not a valid URI scheme")
    if not _is_authority(origin, require_host=True):
        raise _malformed("the domain is not a valid RFC 3986 authority")

    address = lines.next("the address")
    if not _ADDRESS_RE.fullmatch(address):
        raise _malformed("line 2 must be a 0x-prefixed 40-digit hex address")
    if not _is_checksum_address(address):
        raise _malformed("the address is not EIP-55 checksummed")
    if lines.next("the blank line after the address") != "":
        raise _malformed("line 3 must be empty")

    # ABNF: address LF LF [ statement LF ] LF "URI: " -- the statement itself may be empty.
    statement: str | None = None
    first = lines.next("the statement or the URI")
    if first != "":
        statement = first
        if lines.next("the blank line after the statement") != "":
            raise _malformed("the statement must be a single line followed by an empty line")
    elif lines.peek() == "":
        statement = ""
        lines.next("the blank line after the statement")
    if statement is not None and not _STATEMENT_RE.fullmatch(statement):
        raise _malformed("the statement contains characters EIP-4361 does not allow")

    uri = lines.tagged("URI: ")
    if not _is_uri(uri):
        raise _malformed("the URI is not a valid RFC 3986 URI")
    version = lines.tagged("Version: ")
    if not _VERSION_RE.fullmatch(version):
        raise _malformed("the version must be a decimal number")
    chain_id_text = lines.tagged("Chain ID: ")
    if not _CHAIN_ID_RE.fullmatch(chain_id_text):
        raise _malformed("the chain ID must be a decimal integer without leading zeros")
    chain_id = int(chain_id_text)
    nonce = lines.tagged("Nonce: ")
    if not _NONCE_RE.fullmatch(nonce):
        raise _malformed("the nonce must be at least 8 ASCII letters or digits")
    issued_at = _parse_time("Issued At", lines.tagged("Issued At: "))

    expiration_time = not_before = None
    raw = lines.optional("Expiration Time: ")
    if raw is not None:
        expiration_time = _parse_time("Expiration Time", raw)
    raw = lines.optional("Not Before: ")
    if raw is not None:
        not_before = _parse_time("Not Before", raw)
    request_id = lines.optional("Request ID: ")
    if request_id is not None and not _REQUEST_ID_RE.fullmatch(request_id):
        raise _malformed("the request ID contains characters EIP-4361 does not allow")

    resources: list[str] = []
    if lines.peek() == "Resources:":
        lines.next("Resources:")
        while (resource := lines.optional("- ")) is not None:
            if not _is_uri(resource):
                raise _malformed(f"resource {len(resources) + 1} is not a valid RFC 3986 URI")
            resources.append(resource)

    if not lines.at_end():
        raise _malformed(f"unexpected content at line {lines.pos + 1}")

    return SiweMessage(
        domain=origin,
        address=address,
        uri=uri,
        version=version,
        chain_id=chain_id,
        nonce=nonce,
        issued_at=issued_at,
        statement=statement,
        expiration_time=expiration_time,
        not_before=not_before,
        request_id=request_id,
        resources=tuple(resources),
        scheme=scheme,
    )


def new_nonce() -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(_NONCE_LENGTH))


def check_message(
    msg: SiweMessage,
    *,
    domain: str,
    uri: str,
    chain_id: int,
    now: datetime,
    clock_skew_s: int = 60,
    scheme: str = "https",
    max_age_s: int | None = None,
) -> None:
    """Check a parsed message against what this server expects. The nonce is the caller's job.

    ``clock_skew_s`` (seconds) widens every time window in the signer's favour.
    ``max_age_s`` (seconds): a message issued longer ago is refused ("too_old") whatever its
    expiration time says; EIP-4361 makes the expiry optional, so without this bound a message
    signed years ago would be bounded by its nonce alone.
    ``scheme`` is the origin scheme we serve on; a message without a scheme means https
    (EIP-4361), one with a different scheme is a domain mismatch. Comparisons are exact
    string comparisons: configure ``domain`` and ``uri`` exactly as the frontend writes them.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if clock_skew_s < 0:
        raise ValueError("clock_skew_s must be >= 0")
    if msg.domain != domain or (msg.scheme or "https") != scheme:
        raise SiweError("domain_mismatch", "The message was issued for another site.")
    if msg.uri != uri:
        raise SiweError("uri_mismatch", "The message was issued for another URI.")
    if msg.chain_id != chain_id:
        raise SiweError("chain_id_mismatch", "The message was issued for another chain.")
    if msg.version != "1":
        raise SiweError("version_unsupported", "Only SIWE message version 1 is supported.")
    skew = timedelta(seconds=clock_skew_s)
    if msg.expiration_time is not None and msg.expiration_time <= now - skew:
        raise SiweError("expired", "The message has expired.")
    if msg.not_before is not None and msg.not_before > now + skew:
        raise SiweError("not_yet_valid", "The message is not valid yet.")
    if msg.issued_at > now + skew:
        raise SiweError("issued_in_future", "The message claims to be issued in the future.")
    if max_age_s is not None and msg.issued_at < now - skew - timedelta(seconds=max_age_s):
        raise SiweError("too_old", "The message was issued too long ago; ask for a new nonce "
                                   "and sign a fresh message.")


def personal_sign_hash(text: str) -> bytes:
    """keccak256("\\x19Ethereum Signed Message:\\n" + len(utf8) + utf8): 32 bytes."""
    if not isinstance(text, str):
        raise _malformed("message must be text")
    try:
        return bytes(defunct_hash_message(text=text))
    except UnicodeEncodeError:
        raise _malformed("message is not encodable as UTF-8") from None


def _signature_bytes(signature: str | bytes) -> bytes:
    if isinstance(signature, str):
        m = _SIG_HEX_RE.fullmatch(signature)
        if m is None:
            raise SiweError("invalid_signature", "The signature must be 65 bytes of hex.")
        return bytes.fromhex(m.group("hex"))
    if isinstance(signature, (bytes, bytearray, memoryview)):
        raw = bytes(signature)
        if len(raw) != 65:
            raise SiweError("invalid_signature", "The signature must be 65 bytes.")
        return raw
    raise SiweError("invalid_signature", "The signature must be hex text or bytes.")


def recover_signer(text: str, signature: str | bytes) -> str:
    """EIP-191 personal_sign recovery over the exact ``text``; returns an EIP-55 address.

    Signature: 65 bytes r || s || v, hex with optional 0x or raw bytes; v in {27, 28, 0, 1};
    1 <= r < n and 1 <= s <= n/2 (EIP-2 low-s, so no malleable twin is accepted).
    """
    raw = _signature_bytes(signature)
    r = int.from_bytes(raw[0:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    if v in (0, 1):
        v += 27
    if v not in (27, 28):
        raise SiweError("invalid_signature", "The signature recovery id must be 27 or 28.")
    if not 1 <= r < _SECP256K1_N:
        raise SiweError("invalid_signature", "The signature r value is out of range.")
    if not 1 <= s <= _SECP256K1_N // 2:
        raise SiweError("invalid_signature", "The signature s value is out of range.")
    digest = personal_sign_hash(text)
    try:
        public_key = keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except (BadSignature, KeysValidationError, ValueError):
        raise SiweError(
            "invalid_signature", "No public key can be recovered from the signature."
        ) from None
    return str(public_key.to_checksum_address())


def verify_eoa_signature(msg: SiweMessage, text: str, signature: str | bytes) -> None:
    """Check that ``text`` is ``msg`` and that the EOA ``msg.address`` signed ``text``.

    Codes: "malformed_message" if ``text`` does not parse to ``msg``; "invalid_signature" if the
    signature is not a well-formed, recoverable 65-byte ECDSA signature (ERC-1271 and
    ERC-6492 signatures land here); "address_mismatch" if it is well-formed but recovers to
    another address (another key, or a text altered after signing). Both of the last two mean
    "not signed by this EOA": a caller supporting contract wallets tries ERC-1271 next.
    """
    if parse_message(text) != msg:
        raise _malformed("the signed text does not match the message")
    if recover_signer(text, signature) != msg.address:
        raise SiweError("address_mismatch", "The signature was not made by the message's address.")
