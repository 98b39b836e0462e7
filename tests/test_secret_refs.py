"""`secretKeyRef` in component metadata: kept by the loader, resolved over the bus when a block starts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.aio.client import Client

from kernel.client import BusClient
from kernel.components import Component, ComponentSet, SecretKeyRef, load_components
from kernel.errors import NatriumError
from kernel.subjects import Subjects
from services.secrets import SecretsService
from services.state import StateService
from tests.conftest import unique
from tests.secrets_runtime import sealed_component, secrets_runtime, start_secrets, write_key


def folder_with(tmp_path: Path, bucket: str, local: str, *, key: str | None = "bucket", state: str = "orders") -> Path:
    """A components folder: a local.file secret store and a state store whose `bucket` is a secret."""
    (tmp_path / "secrets.json").write_text(json.dumps({"state": {"bucket": bucket}}))
    folder = tmp_path / "components"
    folder.mkdir(exist_ok=True)
    ref = f"{{name: 'state:bucket', key: '{key}'}}" if key else "{name: 'state:bucket'}"
    (folder / "components.yaml").write_text(
        f"""
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: {local}}}
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: {tmp_path / "secrets.json"}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: {state}}}
spec:
  type: state.nats-kv
  version: v1
  metadata:
  - name: keyPrefix
    value: none
  - name: bucket
    secretKeyRef: {ref}
auth:
  secretStore: {local}
"""
    )
    return folder


def test_loader_keeps_the_reference_and_the_auth_store(tmp_path: Path) -> None:
    components = load_components(folder_with(tmp_path, "b", "local"))
    state = next(c for c in components.components if c.name == "orders")
    assert state.secret_refs == {"bucket": SecretKeyRef(name="state:bucket", key="bucket")}
    assert state.secret_store == "local"
    assert state.meta("bucket") is None and state.meta("keyPrefix") == "none"


async def test_state_bucket_comes_from_a_local_file_secret(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    bucket, local = unique("refbucket-"), unique("local-")
    components = load_components(folder_with(tmp_path, bucket, local, key="state:bucket"))
    secrets = await start_secrets(nc, subjects, components.components, components.resources)
    state = StateService(nc, subjects=subjects, components=components)
    try:
        await state.start()
        assert state.stores["orders"].bucket == bucket
        bus = BusClient(nc, timeout=10)
        await bus.request(subjects.block("state", "orders", "save"), {"items": [{"key": "k", "value": 1}]})
        await nc.jetstream().stream_info(f"KV_{bucket}")  # the bucket the secret named exists
        assert (await bus.request(subjects.block("state", "orders", "get"), {"key": "k"}))["data"] == b"1"
    finally:
        await state.stop()
        await secrets.stop()
        await nc.jetstream().delete_stream(f"KV_{bucket}")


async def test_state_service_waits_for_a_secrets_service_that_starts_later(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    bucket, local = unique("refbucket-"), unique("local-")
    components = load_components(folder_with(tmp_path, bucket, local, key=None))  # key defaults to the name
    state = StateService(nc, subjects=subjects, components=components)
    starting = asyncio.create_task(state.start())
    await asyncio.sleep(0.5)  # let it ask at least once and find nobody answering
    assert not starting.done()
    secrets = await start_secrets(nc, subjects, components.components, components.resources)
    try:
        await asyncio.wait_for(starting, 30)
        assert state.stores["orders"].bucket == bucket
    finally:
        await state.stop()
        await secrets.stop()
        await nc.jetstream().delete_stream(f"KV_{bucket}")


async def test_sealed_store_secret_resolves_too(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path))
    bucket = unique("sealedref-")
    state = Component(
        name=unique("orders-"),
        type="state.nats-kv",
        secret_refs={"bucket": SecretKeyRef(name="db", key="bucket")},
        secret_store=vault.name,
    )
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "db", "value": {"bucket": bucket, "other": "x"}})
        service = StateService(nc, subjects=subjects, components=ComponentSet([state]))
        await service.start()
        try:
            assert service.stores[state.name].bucket == bucket
        finally:
            await service.stop()
            await nc.jetstream().delete_stream(f"KV_{bucket}")


async def test_unresolvable_reference_names_component_and_secret(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    vault = sealed_component(write_key(tmp_path))
    async with secrets_runtime(nc, subjects, [vault]) as rt:
        await rt.call(vault.name, "put", {"name": "db", "value": {"user": "u"}})
        for ref, why in [
            (SecretKeyRef(name="absent"), "secret absent not found"),
            (SecretKeyRef(name="db", key="bucket"), "has no key 'bucket'"),
        ]:
            state = Component(
                name=unique("orders-"), type="state.nats-kv", secret_refs={"bucket": ref}, secret_store=vault.name
            )
            with pytest.raises(NatriumError) as err:
                await StateService(nc, subjects=subjects, components=ComponentSet([state])).start()
            assert err.value.code == "ERR_COMPONENT_INVALID"
            message = err.value.message
            assert (
                state.name in message and "metadata bucket" in message and repr(ref.name) in message and why in message
            )
        unknown = Component(
            name=unique("orders-"),
            type="state.nats-kv",
            secret_refs={"bucket": SecretKeyRef(name="db")},
            secret_store="nope",
        )
        with pytest.raises(NatriumError, match="failed finding secret store with key nope"):
            await StateService(nc, subjects=subjects, components=ComponentSet([unknown])).start()


async def test_no_secrets_service_fails_after_the_wait_with_a_hint(
    nc: Client, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StateService, "secret_refs_timeout", 1.0)
    state = Component(name=unique("orders-"), type="state.nats-kv", secret_refs={"bucket": SecretKeyRef(name="b")})
    with pytest.raises(NatriumError) as err:
        await StateService(nc, subjects=subjects, components=ComponentSet([state])).start()
    assert err.value.code == "ERR_COMPONENT_INVALID"
    assert "secret store 'secretstore'" in err.value.message  # the default store when auth.secretStore is unset
    assert "is the secrets service running?" in err.value.message


async def test_ignore_errors_component_is_skipped_when_its_reference_fails(
    nc: Client, subjects: Subjects, tmp_path: Path
) -> None:
    vault = sealed_component(write_key(tmp_path))
    broken = Component(
        name=unique("orders-"),
        type="state.nats-kv",
        secret_refs={"bucket": SecretKeyRef(name="absent")},
        secret_store=vault.name,
        ignore_errors=True,
    )
    async with secrets_runtime(nc, subjects, [vault]):
        service = StateService(nc, subjects=subjects, components=ComponentSet([broken]))
        await service.start()
        try:
            assert service.stores == {}
        finally:
            await service.stop()


async def test_secret_stores_cannot_take_secret_references(nc: Client, subjects: Subjects, tmp_path: Path) -> None:
    vault = sealed_component(write_key(tmp_path)).model_copy(update={"secret_refs": {"keyEnv": SecretKeyRef(name="x")}})
    with pytest.raises(NatriumError) as err:
        await SecretsService(nc, subjects=subjects, components=ComponentSet([vault])).start()
    assert err.value.code == "ERR_COMPONENT_INVALID" and "cannot take metadata from secretKeyRef" in err.value.message
