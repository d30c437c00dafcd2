"""Bad input on the treasury endpoints is a 4xx JSON error, never a 500."""

from __future__ import annotations

from tests.treasury.conftest import TApp


async def test_ids_that_are_not_ascii_integers_are_404(tapp_any: TApp) -> None:
    tapp = tapp_any
    auth = await tapp.operator_auth()
    # "²".isdigit() is True but int("²") raises: this was a 500
    for raw in ("%C2%B2", "%D9%A1", "1%00", "-1", "1e3", "99999999999999999999999", "2147483648",
                "9999999999"):
        for path, headers in ((f"/burns/{raw}/verify", {}), (f"/buybacks/{raw}", auth)):
            r = await tapp.api.client.get(path, headers=headers)
            assert 400 <= r.status_code < 500 and r.json()["error"], (raw, r.text)
            if raw != "1%00":  # NUL is refused before the route (422)
                assert r.status_code == 404 and r.json()["error"] == "buyback_not_found", (raw, r.text)


async def test_huge_offsets_and_nul_are_4xx(tapp_any: TApp) -> None:
    t = tapp_any
    auth = await t.operator_auth()
    for path, headers in (("/burns", {}), ("/buybacks", auth)):
        for offset in ("9223372036854775808", "99999999999999999999999"):
            r = await t.api.client.get(path, params={"offset": offset}, headers=headers)
            assert r.status_code == 422, (path, offset, r.status_code, r.text)
        r = await t.api.client.get(path, params={"offset": "9223372036854775000"}, headers=headers)
        assert r.status_code in (200, 422), (path, r.text)
    r = await t.api.client.get("/buybacks", params={"status": "burned\x00"}, headers=auth)
    assert r.status_code == 422, r.text
    r = await t.api.client.get("/buybacks", params={"status": "x" * 100}, headers=auth)
    assert r.status_code == 422, r.text


async def test_trigger_amount_must_not_be_a_json_fraction(tapp_any: TApp) -> None:
    auth = await tapp_any.operator_auth()
    r = await tapp_any.api.client.post("/trigger-buyback",
                                       json={"amount_usd": 10.5, "dry_run": True}, headers=auth)
    assert r.status_code == 422 and "decimal string" in r.text, r.text
