from __future__ import annotations

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from chain import artifacts
from chain.erc1271 import is_valid_erc1271_signature
from tests.chain.conftest import Chain


async def deploy_wallet(chain: Chain, owner: str) -> str:
    data = artifacts.load("OwnerWallet").bytecode + encode(["address"], [owner]).hex()
    receipt = await chain.sender(chain.devnet.deployer_key).send({"to": None, "data": data})
    return receipt["contractAddress"]


async def test_owner_wallet_signatures(chain: Chain) -> None:
    owner = Account.from_key("0x" + "44" * 32)
    stranger = Account.from_key("0x" + "55" * 32)
    wallet = await deploy_wallet(chain, owner.address)
    digest = keccak(text="sign in to MIA")

    good = bytes(Account.unsafe_sign_hash(digest, owner.key).signature)
    bad = bytes(Account.unsafe_sign_hash(digest, stranger.key).signature)
    assert await is_valid_erc1271_signature(chain.w3, wallet, digest, good)
    assert not await is_valid_erc1271_signature(chain.w3, wallet, digest, bad)
    assert not await is_valid_erc1271_signature(chain.w3, wallet, keccak(text="other"), good)
    assert not await is_valid_erc1271_signature(chain.w3, wallet, digest, b"\x01" * 10)
    # an EOA and an address without code are never valid, and do not raise
    assert not await is_valid_erc1271_signature(chain.w3, owner.address, digest, good)
    # a contract without isValidSignature (the SERV token) reverts: False, not an exception
    assert not await is_valid_erc1271_signature(chain.w3, chain.devnet.serv_token, digest, good)
    assert not await is_valid_erc1271_signature(chain.w3, "not an address", digest, good)
