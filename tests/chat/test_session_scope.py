"""Session ids are scoped per business (issue 23, L3): a business could claim another's chosen
session_id first and the owner then got 403. Now two businesses can both use "abc", neither sees
the other's turns (nor does the miner answering it), and no business learns that another's
session exists. On SQLite and PostgreSQL (its one-statement hot path included)."""

from __future__ import annotations

from tests.support.harness import running_app


async def test_two_businesses_use_one_session_name_without_sharing_it(any_db, settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(any_db)) as api:
        a, b, c = (await api.api_key("alpha"), await api.api_key("beta"),
                   await api.api_key("gamma"))
        miner = await api.miner()

        async def turn(key: str, message: str, answer: str) -> list[str]:
            r = await api.chat(key, message, session_id="abc")
            assert r.status_code == 202, r.text  # was 403 for the second business
            job = await miner.next_job(wait=2)
            assert job is not None and job["prompt"] == message
            assert job["session_id"] == "abc"
            assert (await miner.post_result(job, answer)).status_code == 200
            return [h["content"] for h in job["history"]]

        assert await turn(a, "A1: my card ends 1234", "A-answer 1") == []
        assert await turn(b, "B1: hello", "B-answer 1") == []  # none of alpha's turns
        assert await turn(a, "A2", "A-answer 2") == ["A1: my card ends 1234", "A-answer 1"]
        assert await turn(b, "B2", "B-answer 2") == ["B1: hello", "B-answer 1"]

        async def messages(key: str) -> tuple[int, list[str]]:
            r = await api.client.get("/chat/sessions/abc/messages",
                                     headers={"Authorization": f"Bearer {key}"})
            return r.status_code, [m["message"] for m in r.json()["messages"]]
        assert await messages(a) == (200, ["A1: my card ends 1234", "A-answer 1", "A2",
                                           "A-answer 2"])
        assert await messages(b) == (200, ["B1: hello", "B-answer 1", "B2", "B-answer 2"])
        # a business that never used "abc" cannot tell it from an id nobody used
        never = await api.client.get("/chat/sessions/nobody-used-this/messages",
                                     headers={"Authorization": f"Bearer {c}"})
        used = await api.client.get("/chat/sessions/abc/messages",
                                    headers={"Authorization": f"Bearer {c}"})
        assert used.status_code == never.status_code == 404
        # the same answer but for the request's own id (every error body carries it)
        assert ({k: v for k, v in used.json().items() if k != "request_id"}
                == {k: v for k, v in never.json().items() if k != "request_id"})


async def test_anonymous_callers_still_cannot_name_a_business_session(settings_factory):  # type: ignore[no-untyped-def]
    async with running_app(settings_factory(chat_allow_anonymous=True)) as api:
        key = await api.api_key()
        assert (await api.chat(key, "mine", session_id="abc")).status_code == 202
        r = await api.chat(None, "let me in", session_id="abc")
        assert r.status_code == 403 and r.json()["error"] == "session_forbidden"
        anon = (await api.chat(None, "hello")).json()
        assert (await api.chat(None, "again", session_id=anon["session_id"])).status_code == 202
        r = await api.client.get(f"/chat/sessions/{anon['session_id']}/messages",
                                 headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404  # an anonymous session is not the business's either
