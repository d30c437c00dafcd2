"""A smart-contract wallet (ERC-1271) signs in when a chain is configured; an EOA key can't
impersonate it."""

from __future__ import annotations

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct

from chain import artifacts
from tests.support.harness import running_app


async def test_contract_wallet_signs_in_through_erc1271(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chain_rpc_url="eth-tester")) as api:
        w3 = api.ctx.chain.w3
        owner, stranger = Account.create(), Account.create()
        deployer = (await w3.eth.accounts)[0]
        data = artifacts.load("OwnerWallet").bytecode + encode(["address"], [owner.address]).hex()
        tx = await w3.eth.send_transaction({"from": deployer, "data": data})
        wallet = (await w3.eth.wait_for_transaction_receipt(tx))["contractAddress"]

        async def sign_in(signer):  # type: ignore[no-untyped-def]
            r = await api.client.get("/auth/nonce", params={"address": wallet})
            message = r.json()["message"]
            sig = signer.sign_message(encode_defunct(text=message)).signature.hex()
            return await api.client.post("/register_miner",
                                         json={"message": message, "signature": "0x" + sig.removeprefix("0x")})

        refused = await sign_in(stranger)
        assert refused.status_code == 401 and refused.json()["error"] == "siwe_invalid_signature"
        accepted = await sign_in(owner)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["address"] == wallet

        health = (await api.client.get("/health")).json()
        assert health["checks"]["chain"] == {**health["checks"]["chain"], "ok": True, "required": False}
