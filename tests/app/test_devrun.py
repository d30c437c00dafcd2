"""`mia dev` as a newcomer runs it: a chat answered by the demo miner, idle revenue turned into a
verified burn, and everything gone again after SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from app.localredis import free_port


def run_the_printed_openai_examples(text: str) -> None:
    """The summary's `curl -N` and openai SDK examples, run exactly as printed."""
    curl = re.search(r"^  (curl -N .*?)\n  \.venv", text, re.M | re.S).group(1)  # type: ignore[union-attr]
    streamed = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
    events = [line for line in streamed.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) > 3, streamed.stdout + streamed.stderr
    script = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.S).group(1)  # type: ignore[union-attr]
    sdk = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert sdk.returncode == 0 and "demo" in sdk.stdout.lower(), sdk.stdout + sdk.stderr


def test_mia_dev_runs_the_whole_loop_and_stops_cleanly(tmp_path):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(PORT=str(port), PYTHONPATH=os.getcwd())
    out = tmp_path / "dev.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "dev"], cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "API key:" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.3)
        text = out.read_text()
        key = re.search(r"^API key: (\S+)$", text, re.M).group(1)  # type: ignore[union-attr]
        urls = re.findall(r"http://127\.0\.0\.1:\d+", text)
        api = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api, timeout=30) as client:
            # the demo key is a funded business's (an operator credit, once per database)
            assert "Demo Business', balance 25.000000 USD" in text
            account = client.get("/account", headers=auth).json()
            assert account["business"]["name"] == "Demo Business", account
            assert account["balance_usd"] == "25.000000" and account["deposit"]["deposit_ref"]
            assert f"curl -s {api}/account -H" in text
            r = client.post("/chat", params={"wait": 20}, json={"message": "Opening hours?"},
                            headers=auth)
            assert r.status_code == 200 and "demo" in r.json()["response"].lower(), r.text
            for _ in range(4):
                r = client.post("/idle-job", json={"prompt": "Summarise our refund policy",
                                                   "max_tokens": 64}, headers=auth)
                assert r.status_code == 202, r.text
            deadline = time.monotonic() + 60
            while not client.get("/burns").json()["items"]:
                assert time.monotonic() < deadline, client.get("/metrics").text
                time.sleep(0.5)
            burn = client.get("/burns").json()["items"][0]
            assert client.get(f"/burns/{burn['buyback_id']}/verify").json()["verified"] is True
            assert f"Transparency: {api}/transparency " in text
            page = client.get("/transparency")
            assert page.status_code == 200 and "Revenue" in page.text
        run_the_printed_openai_examples(text)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    for url in set(urls):  # the API, the chain, RunPod stand-in: all stopped with it
        try:
            httpx.get(url, timeout=1)
            raise AssertionError(f"{url} still answers after mia dev stopped")
        except httpx.ConnectError:
            pass
