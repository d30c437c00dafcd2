"""What the miner agrees to sign at sign-in: only an EIP-4361 message for its own backend.

The backend hands out the complete message to sign. A malicious or intercepted backend could
hand out another site's message (the wallet's signature would sign this wallet in THERE), so the
message's domain, scheme and URI must name the backend URL this miner was given, and its address
must be this wallet's. A full EIP-4361 parser is the backend's business; here only the fields
that decide where the signature is good are read, and any ambiguity is a refusal.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_HEADER = re.compile(r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<domain>\S+) wants you "
                     r"to sign in with your Ethereum account:$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ForeignMessage(ValueError):
    """The sign-in message is not for this backend, or not for this wallet."""


def origin(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a URL, lower-case, without the scheme's default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a port that is no number: nothing will match it
        return scheme, parts.netloc.lower()
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return scheme, host


def check_sign_in_message(message: str, backend_url: str, address: str) -> None:
    """Raise ForeignMessage unless `message` signs `address` in to `backend_url` only."""
    lines = message.split("\n")
    header = _HEADER.match(lines[0])
    if header is None or len(lines) < 2:
        raise ForeignMessage("the backend's sign-in message is not an EIP-4361 message; "
                             "refusing to sign")
    scheme, host = origin(backend_url)
    # EIP-4361: no scheme in the message means https.
    asked = origin(f"{header['scheme'] or 'https'}://{header['domain']}")
    if asked != (scheme, host):
        raise ForeignMessage(
            f"the backend asks this wallet to sign in to {asked[0]}://{asked[1]}, not to "
            f"{scheme}://{host}, the backend this miner was given; refusing to sign (if that "
            "is the backend's public URL, pass it with --backend)")
    if lines[1].strip().lower() != address.lower():
        raise ForeignMessage("the backend's sign-in message names another wallet; refusing to sign")
    uris = [line[len("URI: "):] for line in lines if line.startswith("URI: ")]
    if not uris or any(origin(uri) != (scheme, host) for uri in uris):
        raise ForeignMessage(
            f"the backend's sign-in message is for the URI {', '.join(uris) or '(none)'}, not "
            f"for {scheme}://{host}; refusing to sign")
