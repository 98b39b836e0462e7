"""The state block over the bus, msgpack and JSON, with no gateway involved."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest

from kernel.codec import Encoding, encode
from kernel.components import Component
from kernel.errors import NatriumError
from schemas.state import GetReply
from tests.conftest import Runtime, start_runtime, unique


async def test_save_then_get_over_msgpack_returns_json_bytes_and_etag(runtime: Runtime) -> None:
    saved = await runtime.call("save", {"items": [{"key": "order-1", "value": {"qty": 3}}]})
    reply = await runtime.call("get", {"key": "order-1"})
    assert reply["found"] is True
    assert reply["data"] == b'{"qty":3}'
    assert reply["etag"] == saved["etags"][0]


async def test_save_then_get_over_json_returns_the_json_value(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "k", "value": ["a", 1, None]}]}, json_body=True)
    reply = await runtime.call("get", {"key": "k"}, json_body=True)
    assert reply["data"] == ["a", 1, None]
    assert reply["etag"]


async def test_msgpack_bytes_value_is_stored_verbatim_and_base64_in_json(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "bin", "value": b"\x00\xffraw"}]})
    assert (await runtime.call("get", {"key": "bin"}))["data"] == b"\x00\xffraw"
    reply = await runtime.call("get", {"key": "bin"}, json_body=True)
    assert "data" not in reply and reply["dataBase64"] == "AP9yYXc="


async def test_string_value_is_stored_quoted_like_dapr(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "s", "value": "hello"}]})
    assert (await runtime.call("get", {"key": "s"}))["data"] == b'"hello"'


async def test_missing_key_is_not_found_without_error(runtime: Runtime) -> None:
    reply = await runtime.call("get", {"key": "never-written"})
    assert reply["found"] is False and "data" not in reply


@pytest.mark.parametrize(
    "key",
    [
        "a.b.c",
        "with space",
        "slash/and\\back",
        "ünïcödé-ключ-鍵",
        "emoji-🚀",
        "*",
        ">",
        "=3D",
        "..",
        "tab\tnl\n",
        "x" * 300,
    ],
)
async def test_odd_keys_round_trip(runtime: Runtime, key: str) -> None:
    await runtime.call("save", {"items": [{"key": key, "value": key}]})
    assert (await runtime.call("get", {"key": key}))["data"] == json.dumps(key, ensure_ascii=False).encode()
    bulk = await runtime.call("bulkget", {"keys": [key]}, json_body=True)
    assert bulk["items"] == [{"key": key, "data": key, "etag": bulk["items"][0]["etag"]}]


async def test_keys_are_prefixed_with_the_app_id(runtime: Runtime) -> None:
    await runtime.call("save", {"appId": "app-a", "items": [{"key": "k", "value": "a"}]})
    await runtime.call("save", {"appId": "app-b", "items": [{"key": "k", "value": "b"}]})
    assert (await runtime.call("get", {"appId": "app-a", "key": "k"}))["data"] == b'"a"'
    assert (await runtime.call("get", {"appId": "app-b", "key": "k"}))["data"] == b'"b"'
    assert (await runtime.call("get", {"key": "k"}))["found"] is False
    kv = await runtime.nc.jetstream().key_value(runtime.store)
    assert sorted(await kv.keys()) == ["app-a=7C=7Ck", "app-b=7C=7Ck"]


async def test_key_with_separator_is_refused(runtime: Runtime) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"appId": "app", "items": [{"key": "a||b", "value": 1}]})
    assert (err.value.code, err.value.status) == ("ERR_MALFORMED_REQUEST", 400)
    assert err.value.details[0]["reason"] == "DAPR_STATE_ILLEGAL_KEY"


async def test_etag_mismatch_is_409_and_changes_nothing(runtime: Runtime) -> None:
    etag = (await runtime.call("save", {"items": [{"key": "k", "value": 1}]}))["etags"][0]
    await runtime.call("save", {"items": [{"key": "k", "value": 2, "etag": etag}]})
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"items": [{"key": "k", "value": 3, "etag": etag}]})
    assert (err.value.code, err.value.status) == ("ERR_STATE_SAVE", 409)
    assert (await runtime.call("get", {"key": "k"}))["data"] == b"2"


async def test_etag_on_a_missing_key_is_a_mismatch(runtime: Runtime) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"items": [{"key": "ghost", "value": 1, "etag": "5"}]})
    assert err.value.status == 409


async def test_non_numeric_etag_is_a_400(runtime: Runtime) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"items": [{"key": "k", "value": 1, "etag": "abc"}]})
    assert (err.value.code, err.value.status) == ("ERR_STATE_SAVE", 400)


async def test_first_write_creates_once_then_conflicts(runtime: Runtime) -> None:
    item = {"key": "fw", "value": 1, "options": {"concurrency": "first-write"}}
    await runtime.call("save", {"items": [item]})
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"items": [{**item, "value": 2}]})
    assert err.value.status == 409
    assert (await runtime.call("get", {"key": "fw"}))["data"] == b"1"


async def test_first_write_succeeds_again_after_delete(runtime: Runtime) -> None:
    item = {"key": "fw", "value": 1, "options": {"concurrency": "first-write"}}
    await runtime.call("save", {"items": [item]})
    await runtime.call("delete", {"key": "fw"})
    await runtime.call("save", {"items": [{**item, "value": 2}]})
    assert (await runtime.call("get", {"key": "fw"}))["data"] == b"2"


async def test_concurrent_first_writes_let_exactly_one_win(runtime: Runtime) -> None:
    item = {"key": "race", "options": {"concurrency": "first-write"}}
    results = await asyncio.gather(
        *(runtime.call("save", {"items": [{**item, "value": i}]}) for i in range(10)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(isinstance(r, NatriumError) and r.status == 409 for r in results if r not in winners)


async def test_unknown_concurrency_option_is_malformed(runtime: Runtime) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"items": [{"key": "k", "value": 1, "options": {"concurrency": "sometimes"}}]})
    assert err.value.code == "ERR_MALFORMED_REQUEST"


async def test_delete_with_stale_etag_is_409_and_keeps_the_value(runtime: Runtime) -> None:
    first = (await runtime.call("save", {"items": [{"key": "d", "value": 1}]}))["etags"][0]
    await runtime.call("save", {"items": [{"key": "d", "value": 2}]})
    with pytest.raises(NatriumError) as err:
        await runtime.call("delete", {"key": "d", "etag": first})
    assert (err.value.code, err.value.status) == ("ERR_STATE_DELETE", 409)
    assert (await runtime.call("get", {"key": "d"}))["found"] is True


async def test_delete_with_current_etag_and_of_missing_key(runtime: Runtime) -> None:
    etag = (await runtime.call("save", {"items": [{"key": "d", "value": 1}]}))["etags"][0]
    await runtime.call("delete", {"key": "d", "etag": etag})
    assert (await runtime.call("get", {"key": "d"}))["found"] is False
    await runtime.call("delete", {"key": "never-there"})


async def test_ttl_expires_the_key_and_reports_expire_time(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "short", "value": 1, "metadata": {"ttlInSeconds": "1"}}]})
    await runtime.call("save", {"items": [{"key": "forever", "value": 1, "metadata": {"ttlInSeconds": "-1"}}]})
    reply = await runtime.call("get", {"key": "short"})
    assert reply["found"] and reply["metadata"]["ttlExpireTime"].endswith("Z")

    async def expired() -> bool:
        return not (await runtime.call("get", {"key": "short"}))["found"]

    from tests.conftest import wait_until

    await wait_until(expired, timeout=5)
    assert (await runtime.call("get", {"key": "forever"}))["found"]


async def test_request_metadata_ttl_applies_to_every_item(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "a", "value": 1}], "metadata": {"ttlInSeconds": "100"}})
    assert "ttlExpireTime" in (await runtime.call("get", {"key": "a"}))["metadata"]


@pytest.mark.parametrize("ttl", ["abc", "0", "-5", "1.5"])
async def test_bad_ttl_is_malformed(runtime: Runtime, ttl: str) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("save", {"items": [{"key": "k", "value": 1, "metadata": {"ttlInSeconds": ttl}}]})
    assert (err.value.code, err.value.status) == ("ERR_MALFORMED_REQUEST", 400)


async def test_bulk_get_keeps_request_order_and_marks_missing(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": f"k{i}", "value": i} for i in range(5)]})
    reply = await runtime.call("bulkget", {"keys": ["k3", "missing", "k0"], "parallelism": 2})
    items = reply["items"]
    assert [i["key"] for i in items] == ["k3", "missing", "k0"]
    assert items[0]["data"] == b"3" and "data" not in items[1] and items[2]["data"] == b"0"


async def test_bulk_get_reports_a_bad_key_in_its_entry(runtime: Runtime) -> None:
    reply = await runtime.call("bulkget", {"appId": "app", "keys": ["good", "bad||key"]})
    assert "error" not in reply["items"][0]
    assert "||" in reply["items"][1]["error"]


async def test_transaction_commits_upserts_and_deletes_together(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "gone", "value": 1}]})
    await runtime.call(
        "transaction",
        {
            "operations": [
                {"operation": "upsert", "request": {"key": "a", "value": 1}},
                {"operation": "upsert", "request": {"key": "b", "value": 2}},
                {"operation": "delete", "request": {"key": "gone"}},
            ]
        },
    )
    reply = await runtime.call("bulkget", {"keys": ["a", "b", "gone"]}, json_body=True)
    assert [i.get("data") for i in reply["items"]] == [1, 2, None]


async def test_transaction_with_stale_etag_changes_nothing(runtime: Runtime) -> None:
    stale = (await runtime.call("save", {"items": [{"key": "a", "value": "old"}]}))["etags"][0]
    await runtime.call("save", {"items": [{"key": "a", "value": "newer"}]})
    await runtime.call("save", {"items": [{"key": "c", "value": "keep"}]})
    with pytest.raises(NatriumError) as err:
        await runtime.call(
            "transaction",
            {
                "operations": [
                    {"operation": "upsert", "request": {"key": "b", "value": "new"}},
                    {"operation": "delete", "request": {"key": "c"}},
                    {"operation": "upsert", "request": {"key": "a", "value": "tx", "etag": stale}},
                ]
            },
        )
    assert (err.value.code, err.value.status) == ("ERR_STATE_TRANSACTION", 500)
    reply = await runtime.call("bulkget", {"keys": ["a", "b", "c"]}, json_body=True)
    assert [i.get("data") for i in reply["items"]] == ["newer", None, "keep"]


async def test_transaction_with_matching_etags_commits(runtime: Runtime) -> None:
    etag = (await runtime.call("save", {"items": [{"key": "a", "value": 1}]}))["etags"][0]
    await runtime.call(
        "transaction",
        {"operations": [{"operation": "upsert", "request": {"key": "a", "value": 2, "etag": etag}}]},
    )
    assert (await runtime.call("get", {"key": "a"}))["data"] == b"2"


async def test_transaction_first_write_on_existing_key_fails_whole(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "exists", "value": 1}]})
    with pytest.raises(NatriumError) as err:
        await runtime.call(
            "transaction",
            {
                "operations": [
                    {"operation": "upsert", "request": {"key": "new", "value": 1}},
                    {
                        "operation": "upsert",
                        "request": {"key": "exists", "value": 2, "options": {"concurrency": "first-write"}},
                    },
                ]
            },
        )
    assert err.value.code == "ERR_STATE_TRANSACTION"
    assert (await runtime.call("get", {"key": "new"}))["found"] is False


async def test_transaction_unknown_operation_is_not_supported(runtime: Runtime) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("transaction", {"operations": [{"operation": "merge", "request": {"key": "a"}}]})
    assert (err.value.code, err.value.status) == ("ERR_NOT_SUPPORTED_STATE_OPERATION", 400)


async def test_transaction_over_the_batch_limit_is_refused(runtime: Runtime) -> None:
    ops = [{"operation": "upsert", "request": {"key": f"k{i}", "value": i}} for i in range(1001)]
    with pytest.raises(NatriumError) as err:
        await runtime.call("transaction", {"operations": ops})
    assert (err.value.code, err.value.status) == ("ERR_STATE_STORE_TOO_MANY_TRANSACTIONS", 400)


async def test_transaction_of_a_thousand_operations_commits(runtime: Runtime) -> None:
    ops = [{"operation": "upsert", "request": {"key": f"k{i}", "value": i}} for i in range(1000)]
    await runtime.call("transaction", {"operations": ops})
    assert (await runtime.call("get", {"key": "k999"}))["data"] == b"999"


async def test_unknown_store_is_400_store_not_found(runtime: Runtime) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call("get", {"key": "a"}, store="no-such-store")
    assert (err.value.code, err.value.status) == ("ERR_STATE_STORE_NOT_FOUND", 400)


@pytest.mark.parametrize(
    "operation, body",
    [
        ("save", {"items": [{"key": ""}]}),
        ("save", {"items": [{"value": 1}]}),
        ("save", {"items": "not-a-list"}),
        ("save", {"items": [{"key": "k", "etag": 7}]}),
        ("get", {}),
        ("get", {"key": 5}),
        ("bulkget", {"keys": "k"}),
        ("delete", {"key": ""}),
    ],
)
async def test_bad_bodies_are_malformed_requests(runtime: Runtime, operation: str, body: dict) -> None:
    with pytest.raises(NatriumError) as err:
        await runtime.call(operation, body)
    assert (err.value.code, err.value.status) == ("ERR_MALFORMED_REQUEST", 400)


async def test_undecodable_body_gets_an_error_reply(runtime: Runtime) -> None:
    for payload, headers in [(b"\xc1garbage", {}), (b"{not json", {"Content-Type": "application/json"})]:
        msg = await runtime.nc.request(runtime.subject("get"), payload, headers=headers, timeout=2)
        assert msg.headers["Nats-Service-Error-Code"] == "400"
        body = json.loads(msg.data) if headers else msgpack.unpackb(msg.data)
        assert body["errorCode"] == "ERR_MALFORMED_REQUEST"
    # ... and the service still serves
    assert (await runtime.call("get", {"key": "x"}))["found"] is False


async def test_value_over_max_value_size_is_refused_clearly(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    name = unique("small-")
    component = Component(name=name, type="state.nats-kv", metadata={"bucket": name, "maxValueSize": "1024"})
    service = await start_runtime(nc, subjects, [component])
    try:
        runtime = Runtime(nc, subjects, service, name)
        with pytest.raises(NatriumError) as err:
            await runtime.call("save", {"items": [{"key": "big", "value": "x" * 2000}]})
        assert err.value.code == "ERR_STATE_SAVE" and "maxValueSize" in err.value.message
        await runtime.call("save", {"items": [{"key": "ok", "value": "x" * 100}]})
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(f"KV_{name}")


async def test_reply_model_parses_a_get_reply(runtime: Runtime) -> None:
    await runtime.call("save", {"items": [{"key": "m", "value": {"x": 1}}]})
    reply = await runtime.bus.request(runtime.subject("get"), {"key": "m"}, GetReply)
    assert isinstance(reply, GetReply) and reply.data == b'{"x":1}'


async def test_raw_nats_client_can_use_the_contract(runtime: Runtime) -> None:
    """Any NATS client, no natrium code: JSON in, JSON out."""
    body = encode({"items": [{"key": "raw", "value": {"n": 1}}]}, Encoding.JSON)
    msg = await runtime.nc.request(runtime.subject("save"), body, headers={"Content-Type": "application/json"})
    assert "Nats-Service-Error" not in (msg.headers or {})
    msg = await runtime.nc.request(
        runtime.subject("get"), b'{"key":"raw"}', headers={"Content-Type": "application/json"}
    )
    assert json.loads(msg.data)["data"] == {"n": 1}


@pytest.mark.parametrize(
    "strategy, stored",
    [("none", "k"), ("name", "{store}=7C=7Ck"), ("appid", "app=7C=7Ck"), ("shared", "shared=7C=7Ck")],
)
async def test_key_prefix_strategies(nc, subjects, strategy: str, stored: str) -> None:  # type: ignore[no-untyped-def]
    name = unique("prefix-")
    component = Component(name=name, type="state.nats-kv", metadata={"bucket": name, "keyPrefix": strategy})
    service = await start_runtime(nc, subjects, [component])
    try:
        await Runtime(nc, subjects, service, name).call("save", {"appId": "app", "items": [{"key": "k", "value": 1}]})
        kv = await nc.jetstream().key_value(name)
        assert await kv.keys() == [stored.format(store=name)]
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(f"KV_{name}")


async def test_bucket_follows_component_metadata(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    name = unique("meta-")
    metadata = {
        "bucket": name,
        "history": "5",
        "maxBytes": "1048576",
        "storage": "memory",
        "maxValueSize": "2048",
    }
    service = await start_runtime(nc, subjects, [Component(name=name, type="state.nats-kv", metadata=metadata)])
    try:
        config = (await nc.jetstream().stream_info(f"KV_{name}")).config
        assert (config.max_msgs_per_subject, config.max_bytes, config.max_msg_size) == (5, 1048576, 2048)
        assert config.storage == "memory" and config.allow_atomic and config.allow_msg_ttl
    finally:
        await service.stop()
        await nc.jetstream().delete_stream(f"KV_{name}")


async def test_unsupported_store_type_fails_startup_unless_ignored(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    redis = Component(name="cache", type="state.redis")
    with pytest.raises(NatriumError, match="not supported"):
        await start_runtime(nc, subjects, [redis])
    ignored = Component(name="cache", type="state.redis", ignore_errors=True)
    service = await start_runtime(nc, subjects, [ignored])
    await service.stop()


async def test_a_bucket_deleted_under_a_running_service_is_made_again_on_next_use(runtime: Runtime) -> None:
    store = runtime.service.stores[runtime.store]
    await runtime.call("save", {"items": [{"key": "before", "value": 1}]})
    await runtime.nc.jetstream().delete_stream(store.stream)
    assert (await runtime.call("get", {"key": "before"}))["found"] is False  # the data went with it
    await runtime.call("save", {"items": [{"key": "after", "value": 2}]})
    assert (await runtime.call("get", {"key": "after"}))["data"] == b"2"
    await runtime.nc.jetstream().delete_stream(store.stream)
    await runtime.call("save", {"items": [{"key": "again", "value": 3}]})  # a write re-creates it too
    assert (await runtime.call("get", {"key": "again"}))["data"] == b"3"
