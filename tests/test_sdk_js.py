"""The official, unmodified Dapr JS SDK (`@dapr/dapr`, pinned in tests/sdk/js/package.json) against
the gateway: the state API over HTTP, driven by `tests/sdk/js/state.mjs` in a Node subprocess.

The script's checks compare the values the SDK returns; this test re-reads the store through the
gateway to prove the SDK's writes really landed in the store the runtime serves.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, GatewayClient, Runtime, subprocess_env

pytestmark = pytest.mark.slow

JS_DIR = REPO / "tests" / "sdk" / "js"
SDK_PACKAGE = JS_DIR / "node_modules" / "@dapr" / "dapr"
NPM_TIMEOUT = 180.0
SCRIPT_TIMEOUT = 90.0


async def _run(*argv: str, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a program without blocking the event loop (the gateway under test shares it)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture
async def js_sdk() -> Path:
    """`node` on PATH and `@dapr/dapr` in tests/sdk/js, installed from the lockfile if it is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    if not SDK_PACKAGE.is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"{SDK_PACKAGE} is missing and npm is not on PATH to install it")
        command = "ci" if (JS_DIR / "package-lock.json").is_file() else "install"
        try:
            code, out, err = await _run(npm, command, "--no-audit", "--no-fund", cwd=JS_DIR, timeout=NPM_TIMEOUT)
        except TimeoutError:
            pytest.skip(f"`npm {command}` in {JS_DIR} did not finish within {NPM_TIMEOUT:.0f}s")
        except OSError as exc:
            pytest.skip(f"`npm {command}` in {JS_DIR} could not run: {exc}")
        if code != 0 or not SDK_PACKAGE.is_dir():
            tail = (err or out).strip()[-800:]
            pytest.skip(f"`npm {command}` in {JS_DIR} failed (exit {code}), the JS SDK is unavailable: {tail}")
    return Path(node)


async def _get(http: GatewayClient, store: str, key: str) -> tuple[int, bytes]:
    async with http.session.get(http.url(f"/v1.0/state/{store}/{key}")) as r:
        return r.status, await r.read()


@pytest.mark.timeout(NPM_TIMEOUT + SCRIPT_TIMEOUT + 30)
async def test_js_sdk_state_api(js_sdk: Path, http: GatewayClient, runtime: Runtime) -> None:
    port = int(http.base.rsplit(":", 1)[1])
    env = subprocess_env(DAPR_HTTP_PORT=str(port), STORE=runtime.store)
    code, out, err = await _run(str(js_sdk), str(JS_DIR / "state.mjs"), cwd=JS_DIR, timeout=SCRIPT_TIMEOUT, env=env)
    assert code == 0, f"state.mjs exited {code}\nstdout: {out}\nstderr: {err}"
    results: dict[str, Any] = json.loads(out.strip().splitlines()[-1])

    assert results["failures"] == []
    failed = {name: r for name, r in results.items() if isinstance(r, dict) and r.get("ok") is False}
    assert failed == {}

    # Startup handshake and metadata.
    assert results["start"]["ok"]
    assert results["metadata_component"]["name"] == runtime.store

    # What the SDK got back, as daprd would give it.
    assert results["get_object"]["detail"]["actual"] == {"qty": 3, "item": "book"}
    assert results["get_string"]["detail"]["actual"] == "hello"
    assert results["get_missing"]["detail"]["actual"] == ""
    bulk = results["bulk"]
    assert [item["key"] for item in bulk] == ["order-1", "greeting", "no-such-key"]
    assert bulk[0]["data"] == {"qty": 3, "item": "book"} and bulk[1]["data"] == "hello"
    assert isinstance(bulk[0]["etag"], str) and bulk[0]["etag"]
    assert "data" not in bulk[2] or bulk[2]["data"] in (None, "")
    assert results["stale_save_error"]["status"] == 409
    assert results["stale_save_error"]["body"]["errorCode"] == "ERR_STATE_SAVE"
    assert results["stale_delete_error"]["status"] == 409
    assert results["stale_delete_error"]["body"]["errorCode"] == "ERR_STATE_DELETE"
    assert results["stale_transaction_error"]["status"] == 500
    assert results["stale_transaction_error"]["body"]["errorCode"] == "ERR_STATE_TRANSACTION"

    # The SDK's writes landed in the store the runtime serves.
    assert await _get(http, runtime.store, "tx-1") == (200, b'{"a":2}')
    assert await _get(http, runtime.store, "flags") == (200, b"[true,false,null]")
    for gone in ("order-1", "greeting", "count", "tx-2"):
        assert await _get(http, runtime.store, gone) == (204, b""), gone


@pytest.fixture
async def http_for_pubsub(nc, pubsub):  # type: ignore[no-untyped-def]
    from adapters.gateway.context import GatewayConfig
    from tests.conftest import free_port, open_gateway

    client, runner = await open_gateway(nc, pubsub.subjects, GatewayConfig(http_port=free_port(), app_id="js-app"))
    yield client
    await client.session.close()
    await runner.cleanup()


@pytest.mark.timeout(NPM_TIMEOUT + SCRIPT_TIMEOUT + 30)
async def test_js_sdk_publish(js_sdk: Path, http_for_pubsub: GatewayClient, pubsub: Any) -> None:
    from tests.conftest import Inbox

    inbox = Inbox()
    await pubsub.sdk("py-subscriber").subscribe(pubsub.name, "js-orders", inbox)
    port = int(http_for_pubsub.base.rsplit(":", 1)[1])
    env = subprocess_env(DAPR_HTTP_PORT=str(port), PUBSUB=pubsub.name)
    code, out, err = await _run(str(js_sdk), str(JS_DIR / "pubsub.mjs"), cwd=JS_DIR, timeout=SCRIPT_TIMEOUT, env=env)
    assert code == 0, err
    results = json.loads(out)
    assert results["object"] == {} and results["text"] == {} and results["withTtl"] == {}
    assert results["bulk"] == {"failedMessages": []}
    assert "ERR_PUBSUB_NOT_FOUND" in results["unknown"]["error"]
    events = await inbox.wait(5)
    data = sorted(json.dumps(e.data, sort_keys=True) for e in events)
    expected = [{"item": "book", "qty": 2}, "plain words", {"ttl": True}, {"n": 1}, {"n": 2}]
    assert data == sorted(json.dumps(d, sort_keys=True) for d in expected)
    assert {e.envelope["source"] for e in events} == {"js-app"}
    assert next(e for e in events if e.data == "plain words").content_type == "text/plain"
