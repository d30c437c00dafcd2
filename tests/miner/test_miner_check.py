"""`mia-miner --check` run as the real command: one plain sentence per problem."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.miner.support import TEST_KEY


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIA_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "miner", "--check", *args],
        capture_output=True, text=True, timeout=60, env=full_env,
    )


def test_check_reports_unreachable_backend_but_good_wallet_and_model(demo_model, unused_url) -> None:
    p = run_check("--backend", unused_url, "--model-url", demo_model.url,
                  env={"MIA_MINER_PRIVATE_KEY": TEST_KEY})
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout
    assert f"PROBLEM  Cannot reach the backend at {unused_url}" in out
    assert "ok       wallet: address 0x" in out
    assert "serves mia-demo" in out and "test chat answered" in out
    assert out.count("PROBLEM") == 1 and "1 problem(s) found." in out
    assert TEST_KEY[2:] not in out + p.stderr


def test_check_reports_bad_key_model_not_served_and_model_down(demo_model, unused_url) -> None:
    p = run_check("--backend", unused_url, "--model-url", demo_model.url, "--model", "mixtral",
                  env={"MIA_MINER_PRIVATE_KEY": "0xdeadbeef"})
    assert p.returncode == 1
    assert "PROBLEM  Wallet: the private key must be 32 bytes" in p.stdout
    assert "does not serve the model 'mixtral'; it serves: mia-demo." in p.stdout
    assert "deadbeef" not in p.stdout + p.stderr

    p = run_check("--backend", unused_url, "--model-url", unused_url)
    assert "PROBLEM  Wallet: no wallet configured" in p.stdout
    assert f"PROBLEM  Model server: cannot reach the model server at {unused_url}/v1" in p.stdout
    assert "3 problem(s) found." in p.stdout


def test_check_reports_model_server_that_cannot_chat(demo_model, unused_url) -> None:
    demo_model.control(fail_status=500)
    p = run_check("--backend", unused_url, "--model-url", demo_model.url,
                  env={"MIA_MINER_PRIVATE_KEY": TEST_KEY})
    assert "PROBLEM  The model server could not answer a test chat: the model server answered HTTP 500" in p.stdout


def test_check_reports_wrong_keystore_password(tmp_path, demo_model, unused_url) -> None:
    from miner.wallet import Wallet

    ks = tmp_path / "w.json"
    Wallet.write_keystore(ks, "right")
    p = run_check("--keystore", str(ks), "--backend", unused_url, "--model-url", demo_model.url,
                  env={"MIA_MINER_KEYSTORE_PASSWORD": "wrong"})
    assert f"PROBLEM  Wallet: the keystore password for {ks} is wrong." in p.stdout
    p = run_check("--keystore", str(ks), "--backend", unused_url, "--model-url", demo_model.url,
                  env={"MIA_MINER_KEYSTORE_PASSWORD": "right"})
    assert "ok       wallet: address" in p.stdout


def test_config_error_exits_2_with_plain_words() -> None:
    p = subprocess.run([sys.executable, "-m", "miner", "--concurrency", "0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "mia-miner: concurrency must be between 1 and 256" in p.stderr


async def test_check_against_the_real_backend(backend, demo_model) -> None:
    import asyncio

    from miner.client import BackendClient
    from miner.wallet import Wallet
    from tests.miner.support import new_key

    key = new_key()
    env = {"MIA_MINER_PRIVATE_KEY": key}
    p = await asyncio.to_thread(run_check, "--backend", backend.url, "--model-url", demo_model.url, env=env)
    assert p.returncode == 0, p.stdout
    assert f"ok       backend: {backend.url} is healthy" in p.stdout
    assert "note     this wallet is not registered yet" in p.stdout
    assert "All checks passed." in p.stdout
    assert backend.query("SELECT COUNT(*) FROM miners")[0][0] == 0  # --check registers nothing

    client = BackendClient(backend.url, Wallet.from_private_key(key))
    await client.ensure_token()  # first run: registers
    await client.aclose()
    p = await asyncio.to_thread(run_check, "--backend", backend.url, "--model-url", demo_model.url, env=env)
    assert p.returncode == 0 and "ok       backend: this wallet signs in" in p.stdout
    assert key[2:] not in p.stdout + p.stderr


async def test_check_reports_an_unhealthy_backend(backend_factory, demo_model, unused_url) -> None:
    import asyncio

    from tests.miner.support import new_key

    sick = backend_factory(redis_url=unused_url.replace("http://", "redis://") + "/0")
    p = await asyncio.to_thread(run_check, "--backend", sick.url, "--model-url", demo_model.url,
                                env={"MIA_MINER_PRIVATE_KEY": new_key()})
    assert p.returncode == 1
    assert f"PROBLEM  The backend at {sick.url} is running but reports itself unhealthy (HTTP 503" in p.stdout


def test_check_spots_a_chat_template_without_system_role(demo_model, unused_url) -> None:
    demo_model.control(strict_roles=True)
    env = {"MIA_MINER_PRIVATE_KEY": TEST_KEY}
    p = run_check("--backend", unused_url, "--model-url", demo_model.url, env=env)
    assert "PROBLEM  The model's chat template rejects a system message" in p.stdout
    assert "run with --no-system-role" in p.stdout
    p = run_check("--backend", unused_url, "--model-url", demo_model.url, "--no-system-role", env=env)
    assert "test chat answered" in p.stdout and "1 problem(s) found." in p.stdout  # the backend only


def test_check_accepts_ollama_latest_tag(tmp_path, unused_url) -> None:
    from miner.demo_model import DemoState, create_demo_app
    from tests.miner.support import UvicornThread

    with UvicornThread(create_demo_app(DemoState(model="mixtral:latest"))) as srv:
        p = run_check("--backend", unused_url, "--model-url", srv.url, "--model", "mixtral",
                      env={"MIA_MINER_PRIVATE_KEY": TEST_KEY})
    assert "serves mixtral" in p.stdout and "test chat answered" in p.stdout


def test_new_keystore_command(tmp_path) -> None:
    path = tmp_path / "w.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIA_")}
    env["MIA_MINER_KEYSTORE_PASSWORD"] = "pw-for-test"
    p = subprocess.run([sys.executable, "-m", "miner", "--new-keystore", str(path)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    address = p.stdout.strip().rsplit(" ", 1)[1]
    from miner.wallet import Wallet

    assert Wallet.from_keystore(path, "pw-for-test").address == address
    again = subprocess.run([sys.executable, "-m", "miner", "--new-keystore", str(path)],
                           capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_demo_model_runs_as_a_module() -> None:
    import time

    import httpx

    from tests.miner.support import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "miner.demo_model", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert r.json()["data"][0]["id"] == "mia-demo"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "NOT a real LLM" in out
