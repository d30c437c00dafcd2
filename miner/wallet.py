"""The miner's wallet. The private key lives only inside the eth_account object; nothing here
ever formats it into a string, and repr() shows only the address."""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak


class WalletError(ValueError):
    """A key or keystore that cannot be used; the message never contains the secret."""


class Wallet:
    __slots__ = ("_account",)

    def __init__(self, account) -> None:  # account: eth_account LocalAccount
        self._account = account

    @classmethod
    def from_private_key(cls, key: str) -> "Wallet":
        raw = (key or "").strip()
        hexpart = raw[2:] if raw.lower().startswith("0x") else raw
        if len(hexpart) != 64:
            raise WalletError(
                "the private key must be 32 bytes written as 64 hex characters "
                f"(optionally 0x-prefixed); got {len(hexpart)} characters"
            )
        try:
            bytes.fromhex(hexpart)
            account = Account.from_key("0x" + hexpart)
        except Exception:
            # Deliberately not chaining the original exception: its text may quote the key.
            raise WalletError(
                "the private key is not valid: it must be hex and a valid secp256k1 key"
            ) from None
        return cls(account)

    @classmethod
    def from_keystore(cls, path: str | Path, password: str) -> "Wallet":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise WalletError(f"the keystore file {p} does not exist") from None
        except (OSError, ValueError) as exc:
            raise WalletError(f"the keystore file {p} is not readable JSON ({type(exc).__name__})") from None
        try:
            key = Account.decrypt(data, password)
        except ValueError:
            raise WalletError(f"the keystore password for {p} is wrong") from None
        except Exception as exc:
            raise WalletError(f"the keystore file {p} is not a valid keystore ({type(exc).__name__})") from None
        return cls(Account.from_key(key))

    @staticmethod
    def write_keystore(path: str | Path, password: str) -> str:
        """Create a new random wallet, store it encrypted at `path`, return its address."""
        account = Account.create()
        p = Path(path)
        if p.exists():
            raise WalletError(f"{p} already exists; refusing to overwrite a wallet")
        p.parent.mkdir(parents=True, exist_ok=True)
        blob = Account.encrypt(account.key, password)
        p.touch(mode=0o600)
        p.write_text(json.dumps(blob))
        return account.address

    @property
    def address(self) -> str:
        return self._account.address

    def sign_text(self, message: str) -> str:
        """EIP-191 personal_sign over the message text (the EIP-4361 sign-in message)."""
        signed = self._account.sign_message(encode_defunct(text=message))
        return "0x" + bytes(signed.signature).hex()

    def sign_result(self, job_id: str, output: str, finish_reason: str | None = None) -> str:
        """EIP-191 signature over keccak256(utf8(job_id) || utf8(output)) (with a finish reason:
        || 0x00 || utf8(finish_reason)), as the backend verifies."""
        signed = self._account.sign_message(
            encode_defunct(primitive=result_digest(job_id, output, finish_reason)))
        return "0x" + bytes(signed.signature).hex()

    def __repr__(self) -> str:
        return f"Wallet({self.address})"

    __str__ = __repr__

    def __reduce__(self):  # no pickling a key into some cache or multiprocessing queue
        raise TypeError("Wallet cannot be pickled")


def result_digest(job_id: str, output: str, finish_reason: str | None = None) -> bytes:
    """keccak256(utf8(job_id) || utf8(output)), or with a finish reason
    keccak256(utf8(job_id) || utf8(output) || 0x00 || utf8(finish_reason))."""
    tail = b"" if finish_reason is None else b"\x00" + finish_reason.encode("utf-8")
    return keccak(job_id.encode("utf-8") + output.encode("utf-8") + tail)


def recover_result_signer(job_id: str, output: str, signature: str,
                          finish_reason: str | None = None) -> str:
    return Account.recover_message(
        encode_defunct(primitive=result_digest(job_id, output, finish_reason)), signature=signature
    )
