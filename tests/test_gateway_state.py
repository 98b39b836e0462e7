"""Dapr's HTTP state API through the gateway: status codes, headers and bodies as daprd gives them."""

from __future__ import annotations

import io
import json

import pytest

from adapters.gateway.context import GatewayConfig
from tests.conftest import GatewayClient, Runtime, free_port, open_gateway


async def post(http: GatewayClient, path: str, body: object, **kwargs: object) -> tuple[int, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    data = io.BytesIO(raw)  # aiohttp warns about large raw-bytes bodies
    async with http.session.post(
        http.url(path), data=data, headers={"content-type": "application/json"}, **kwargs
    ) as r:
        return r.status, await r.read()


async def test_readme_example_save_and_get_with_etag(http: GatewayClient, runtime: Runtime) -> None:
    status, body = await post(http, f"/v1.0/state/{runtime.store}", [{"key": "order-1", "value": {"qty": 3}}])
    assert (status, body) == (204, b"")
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/order-1")) as r:
        assert r.status == 200
        assert await r.json() == {"qty": 3}
        assert r.headers["ETag"].isdigit()
        assert r.headers["Content-Type"].startswith("application/json")


async def test_put_saves_too_and_empty_array_is_204(http: GatewayClient, runtime: Runtime) -> None:
    async with http.session.put(http.url(f"/v1.0/state/{runtime.store}"), json=[{"key": "p", "value": 1}]) as r:
        assert r.status == 204
    assert (await post(http, f"/v1.0/state/{runtime.store}", []))[0] == 204


async def test_missing_key_is_204_with_empty_body(http: GatewayClient, runtime: Runtime) -> None:
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/nothing")) as r:
        assert r.status == 204
        assert await r.read() == b""


async def test_saved_string_comes_back_quoted(http: GatewayClient, runtime: Runtime) -> None:
    await post(http, f"/v1.0/state/{runtime.store}", [{"key": "s", "value": "text"}])
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/s")) as r:
        assert await r.read() == b'"text"'


async def test_url_encoded_key_with_slash_and_unicode(http: GatewayClient, runtime: Runtime) -> None:
    key = "a/b ü"
    await post(http, f"/v1.0/state/{runtime.store}", [{"key": key, "value": 1}])
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/a%2Fb%20%C3%BC")) as r:
        assert (r.status, await r.read()) == (200, b"1")
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/a/b%20%C3%BC")) as r:
        assert (r.status, await r.read()) == (200, b"1")


async def test_stale_etag_on_save_is_409(http: GatewayClient, runtime: Runtime) -> None:
    await post(http, f"/v1.0/state/{runtime.store}", [{"key": "k", "value": 1}])
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/k")) as r:
        etag = r.headers["ETag"]
    assert (await post(http, f"/v1.0/state/{runtime.store}", [{"key": "k", "value": 2, "etag": etag}]))[0] == 204
    status, body = await post(http, f"/v1.0/state/{runtime.store}", [{"key": "k", "value": 3, "etag": etag}])
    assert status == 409 and json.loads(body)["errorCode"] == "ERR_STATE_SAVE"


async def test_first_write_via_http(http: GatewayClient, runtime: Runtime) -> None:
    item = {"key": "fw", "value": 1, "options": {"concurrency": "first-write", "consistency": "strong"}}
    assert (await post(http, f"/v1.0/state/{runtime.store}", [item]))[0] == 204
    assert (await post(http, f"/v1.0/state/{runtime.store}", [item]))[0] == 409


async def test_ttl_from_query_metadata_shows_in_get_headers(http: GatewayClient, runtime: Runtime) -> None:
    await post(http, f"/v1.0/state/{runtime.store}?metadata.ttlInSeconds=60", [{"key": "t", "value": 1}])
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/t")) as r:
        assert r.headers["metadata.ttlExpireTime"].endswith("Z")


async def test_delete_with_if_match(http: GatewayClient, runtime: Runtime) -> None:
    await post(http, f"/v1.0/state/{runtime.store}", [{"key": "d", "value": 1}])
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/d")) as r:
        etag = r.headers["ETag"]
    async with http.session.delete(http.url(f"/v1.0/state/{runtime.store}/d"), headers={"If-Match": "999999"}) as r:
        assert r.status == 409 and (await r.json())["errorCode"] == "ERR_STATE_DELETE"
    async with http.session.delete(http.url(f"/v1.0/state/{runtime.store}/d"), headers={"If-Match": etag}) as r:
        assert r.status == 204
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/d")) as r:
        assert r.status == 204


async def test_bulk_returns_data_field_in_key_order(http: GatewayClient, runtime: Runtime) -> None:
    await post(http, f"/v1.0/state/{runtime.store}", [{"key": "a", "value": {"n": 1}}, {"key": "b", "value": "two"}])
    status, body = await post(http, f"/v1.0/state/{runtime.store}/bulk", {"keys": ["b", "zz", "a"], "parallelism": 2})
    items = json.loads(body)
    assert status == 200
    assert [i["key"] for i in items] == ["b", "zz", "a"]
    assert items[0]["data"] == "two" and items[2]["data"] == {"n": 1}
    assert items[1] == {"key": "zz"}
    assert items[0]["etag"].isdigit() and "value" not in items[0]


async def test_transaction_all_or_nothing_over_http(http: GatewayClient, runtime: Runtime) -> None:
    path = f"/v1.0/state/{runtime.store}/transaction"
    ok = {"operations": [{"operation": "upsert", "request": {"key": "x", "value": 1}}], "metadata": None}
    assert (await post(http, path, ok))[0] == 204
    stale = {
        "operations": [
            {"operation": "upsert", "request": {"key": "y", "value": 1}},
            {"operation": "upsert", "request": {"key": "x", "value": 2, "etag": "424242"}},
        ]
    }
    status, body = await post(http, path, stale)
    assert status == 500 and json.loads(body)["errorCode"] == "ERR_STATE_TRANSACTION"
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/y")) as r:
        assert r.status == 204
    assert (await post(http, path, {"operations": []}))[0] == 204
    status, body = await post(http, path, {"operations": [{"operation": "merge", "request": {"key": "x"}}]})
    assert status == 400 and json.loads(body)["errorCode"] == "ERR_NOT_SUPPORTED_STATE_OPERATION"


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", "ERR_MALFORMED_REQUEST"),
        (b"", "ERR_MALFORMED_REQUEST"),
        (b'{"key":"a"}', "ERR_MALFORMED_REQUEST"),
        (b'[{"value":1}]', "ERR_MALFORMED_REQUEST"),
        (b'[{"key":"a","etag":1}]', "ERR_MALFORMED_REQUEST"),
        (b'[{"key":"","value":1}]', "ERR_MALFORMED_REQUEST"),
    ],
)
async def test_bad_save_bodies_are_400(http: GatewayClient, runtime: Runtime, body: bytes, code: str) -> None:
    status, reply = await post(http, f"/v1.0/state/{runtime.store}", body)
    assert status == 400 and json.loads(reply)["errorCode"] == code


async def test_unknown_store_is_400(http: GatewayClient, runtime: Runtime) -> None:
    async with http.session.get(http.url("/v1.0/state/nope/k")) as r:
        assert r.status == 400
        assert (await r.json())["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"


async def test_body_over_limit_is_413(http: GatewayClient, runtime: Runtime) -> None:
    big = json.dumps([{"key": "big", "value": "x" * (5 * 1024 * 1024)}]).encode()
    status, body = await post(http, f"/v1.0/state/{runtime.store}", big)
    assert status == 413 and json.loads(body)["errorCode"] == "ERR_BODY_READ"


async def test_three_mib_value_round_trips(http: GatewayClient, runtime: Runtime) -> None:
    value = "v" * (3 * 1024 * 1024)
    assert (await post(http, f"/v1.0/state/{runtime.store}", [{"key": "large", "value": value}]))[0] == 204
    async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/large")) as r:
        assert len(await r.read()) == len(value) + 2


async def test_query_api_is_reported_unsupported(http: GatewayClient, runtime: Runtime) -> None:
    status, body = await post(http, f"/v1.0-alpha1/state/{runtime.store}/query", {"filter": {}})
    assert status == 500 and json.loads(body)["errorCode"] == "ERR_STATE_STORE_NOT_SUPPORTED"


async def test_unknown_route_is_404_direct_invoke(http: GatewayClient) -> None:
    async with http.session.get(http.url("/v1.0/nothing-here")) as r:
        assert r.status == 404 and (await r.json())["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_health_and_metadata(http: GatewayClient, runtime: Runtime) -> None:
    for path in ("/v1.0/healthz", "/v1.0/healthz/outbound"):
        async with http.session.get(http.url(path)) as r:
            assert (r.status, await r.read()) == (204, b"")
    async with http.session.put(http.url("/v1.0/metadata/team"), data=b"blue") as r:
        assert r.status == 204
    async with http.session.get(http.url("/v1.0/metadata")) as r:
        meta = await r.json()
    assert r.status == 200
    assert {"name": runtime.store, "type": "state.nats-kv", "version": "v1"}.items() <= meta["components"][0].items()
    assert meta["extended"]["team"] == "blue"
    assert meta["natrium"]["services"] == [{"name": "natrium-state", "version": "0.1.0", "replicas": 1}]


async def test_no_state_service_means_store_not_configured(nc, subjects) -> None:  # type: ignore[no-untyped-def]
    client, runner = await open_gateway(nc, subjects, GatewayConfig(http_port=free_port()))
    client.gateway.bus.no_responder_retries = 0
    try:
        async with client.session.get(client.url("/v1.0/state/statestore/k")) as r:
            assert r.status == 500
            assert (await r.json())["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"
    finally:
        await client.session.close()
        await runner.cleanup()


async def test_api_token_is_required_except_for_health(nc, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    config = GatewayConfig(http_port=free_port(), api_token="s3cret")
    client, runner = await open_gateway(nc, runtime.subjects, config)
    try:
        url = client.url(f"/v1.0/state/{runtime.store}/k")
        async with client.session.get(url) as r:
            assert (r.status, await r.text()) == (401, "invalid api token")
        async with client.session.get(url, headers={"dapr-api-token": "wrong"}) as r:
            assert r.status == 401
        async with client.session.get(url, headers={"dapr-api-token": "s3cret"}) as r:
            assert r.status == 204
        async with client.session.get(client.url("/v1.0/healthz/outbound")) as r:
            assert r.status == 204
    finally:
        await client.session.close()
        await runner.cleanup()


async def test_traceparent_reaches_the_service(http: GatewayClient, runtime: Runtime) -> None:
    seen: list[str] = []
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    async def record(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append((msg.headers or {}).get("traceparent", ""))

    # A plain (non-queue) subscriber sees a copy of every request on the subject.
    sub = await runtime.nc.subscribe(runtime.subject("get"), cb=record)
    try:
        headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        async with http.session.get(http.url(f"/v1.0/state/{runtime.store}/k"), headers=headers) as r:
            assert r.status == 204
        await runtime.nc.flush()
    finally:
        await sub.unsubscribe()
    assert seen and seen[0].split("-")[1] == trace_id
