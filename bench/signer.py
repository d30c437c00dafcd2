"""A simulated miner's wallet: EIP-191 personal_sign straight on coincurve.

The coordinator's cost is what we measure, so the load generator signs with the cheapest correct
path (libsecp256k1), not through eth-account's layers. The signatures are the same bytes a real
wallet produces; the server verifies every one of them.
"""

from __future__ import annotations

import secrets

from coincurve import PrivateKey
from eth_utils import keccak, to_checksum_address

from app.auth.wallet import result_digest


class Wallet:
    def __init__(self, private_key: bytes | None = None):
        self.key = PrivateKey(private_key or secrets.token_bytes(32))
        public = self.key.public_key.format(compressed=False)[1:]
        self.address = to_checksum_address(keccak(public)[-20:])

    def personal_sign(self, message: bytes) -> str:
        prefixed = b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message
        sig = self.key.sign_recoverable(keccak(prefixed), hasher=None)
        return "0x" + (sig[:64] + bytes([sig[64] + 27])).hex()

    def sign_result(self, job_id: str, output: str) -> str:
        return self.personal_sign(result_digest(job_id, output))
