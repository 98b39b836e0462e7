"""`natrium service state --metrics-port`: the real command serves Prometheus metrics a scraper can read."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from kernel.client import BusClient
from kernel.errors import NatriumError
from kernel.nats_server import EmbeddedNatsServer
from kernel.subjects import Subjects
from tests.conftest import NATRIUM, REPO, free_port, subprocess_env, unique, wait_until

pytestmark = pytest.mark.slow

COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.nats-kv
  version: v1
  metadata:
    - name: bucket
      value: {bucket}
"""


@pytest.fixture
async def bucket(nc: Client) -> AsyncIterator[str]:
    name = unique("metrics-")
    yield name
    try:
        await nc.jetstream().delete_stream(f"KV_{name}")
    except Exception:  # the service may not have got as far as creating it
        pass


async def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_service_command_serves_request_and_error_counts_on_metrics_port(
    nats_server: EmbeddedNatsServer, nc: Client, tmp_path: Path, bucket: str
) -> None:
    (tmp_path / "store.yaml").write_text(COMPONENT.format(bucket=bucket))
    subjects, port = Subjects(unique("root")), free_port()
    args = ["service", "state", "--nats-url", nats_server.url, "--root", subjects.root]
    proc = await asyncio.create_subprocess_exec(
        *NATRIUM,
        *args,
        "--components",
        str(tmp_path),
        "--metrics-port",
        str(port),
        cwd=REPO,
        env=subprocess_env(),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        bus = BusClient(nc, timeout=5)

        async def serving() -> bool:
            try:
                await bus.request(subjects.block("state", "store", "get"), {"key": "k"})
            except NatriumError:
                return False  # no responders yet
            return True

        await wait_until(serving, timeout=60, interval=0.2)
        await bus.request(subjects.block("state", "store", "save"), {"items": [{"key": "k", "value": 1}]})
        with pytest.raises(NatriumError) as missing:
            await bus.request(subjects.block("state", "nostore", "get"), {"key": "k"})
        assert missing.value.code == "ERR_STATE_STORE_NOT_FOUND"

        samples = await scrape(port)
        assert samples is not None
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 204  # what the Kubernetes probes of deploy/k8s ask
        get = {"block": "state", "operation": "get"}
        assert samples[("natrium_requests_total", frozenset({**get}.items()))] == 2
        save = frozenset({"block": "state", "operation": "save"}.items())
        assert samples[("natrium_requests_total", save)] == 1
        code = frozenset({**get, "code": "ERR_STATE_STORE_NOT_FOUND"}.items())
        assert samples[("natrium_request_errors_total", code)] == 1
        assert samples[("natrium_request_seconds_count", frozenset(get.items()))] == 2
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-2000:]
