"""Bulk subscribe for HTTP apps under `natrium run`, and the subscriptions `/v1.0/metadata` lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.appchannel.http_app import bulk_statuses
from adapters.delivery import Status
from adapters.subscriptions import BulkSubscribe, SubscriptionSpec
from kernel.errors import NatriumError
from tests.conftest import wait_until
from tests.test_invoke import apps, default_pubsub, http  # noqa: F401  (fixtures)

DEAD_LETTERS = """
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: dead-orders}
spec:
  pubsubname: pubsub
  topic: bulk-orders-dead
  routes: {default: /dead}
  bulkSubscribe: {enabled: true, maxMessagesCount: 10, maxAwaitDurationMs: 200}
scopes: [bulky]
"""


def test_bulk_answers_are_read_per_entry() -> None:
    ids = ["a", "b", "c", "d"]
    answers = [
        {"entryId": "a", "status": "SUCCESS"},
        {"entryId": "b", "status": "DROP"},
        {"entryId": "c", "status": "x"},
    ]
    body = json.dumps({"statuses": answers}).encode()
    assert bulk_statuses(200, body, ids) == [Status.SUCCESS, Status.DROP, Status.RETRY, Status.RETRY]
    assert bulk_statuses(500, body, ids) == [Status.RETRY] * 4
    assert bulk_statuses(404, b"", ids) == [Status.DROP] * 4
    assert bulk_statuses(200, b"not json", ids) == [Status.RETRY] * 4


def test_bulk_subscribe_settings_are_parsed_and_checked() -> None:
    spec = {"pubsubname": "p", "topic": "t", "route": "/r"}
    assert SubscriptionSpec.from_spec(spec, "x").bulk is None
    assert SubscriptionSpec.from_spec({**spec, "bulkSubscribe": {"enabled": False}}, "x").bulk is None
    on = SubscriptionSpec.from_spec({**spec, "bulkSubscribe": {"enabled": True}}, "x")
    assert on.bulk == BulkSubscribe(100, 1000)  # Dapr's defaults
    for bad in ({"enabled": True, "maxMessagesCount": 0}, {"enabled": True, "maxAwaitDurationMs": "soon"}, "yes"):
        with pytest.raises(NatriumError) as caught:
            SubscriptionSpec.from_spec({**spec, "bulkSubscribe": bad}, "x")
        assert caught.value.code == "ERR_COMPONENT_INVALID" and "bulkSubscribe" in caught.value.message


async def test_http_app_gets_batches_and_settles_each_entry(apps: Any, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "dead.yaml").write_text(DEAD_LETTERS)
    app = await apps("bulky", "bulk_app", components=tmp_path)
    entries = [{"entryId": str(n), "event": {"n": n}, "contentType": "application/json"} for n in range(10)]
    status, _, _ = await http("POST", f"{app.api}/v1.0-alpha1/publish/bulk/pubsub/bulk-orders", json=entries)
    assert status == 204

    async def report() -> dict[str, Any]:
        return (await http("GET", f"{app.api}/v1.0/invoke/bulky/method/report"))[1]

    async def settled() -> bool:
        found = await report()
        return set(found["succeeded"]) == set(range(10)) - {7} and len(found["dead"]) == 1

    await wait_until(settled, timeout=30)
    found = await report()
    posts = found["posts"]
    assert all(p["type"] == "com.dapr.event.sent.bulk" and p["topic"] == "bulk-orders" for p in posts)
    assert all(p["pubsubname"] == "pubsub" and len(p["entries"]) <= 5 for p in posts)
    assert max(len(p["entries"]) for p in posts) > 1  # batched, not one event per POST
    assert {e["contentType"] for p in posts for e in p["entries"]} == {"application/cloudevents+json"}
    delivered = [e["n"] for p in posts for e in p["entries"]]
    assert set(delivered) == set(range(10))
    assert delivered.count(3) >= 2 and delivered.count(5) >= 2  # RETRY and a missing status came back
    assert sorted(found["succeeded"]) == sorted(set(found["succeeded"]))  # each success once
    assert found["dead"] == [{"n": 7, "from": "bulk-orders"}]  # DROP went to the dead-letter topic
    refused_first = [e["n"] for e in posts[0]["entries"]]  # the batch answered 500 comes back whole
    assert delivered.count(7) == 1 + (7 in refused_first)  # dropped at once, never retried


async def test_metadata_lists_the_apps_subscriptions(apps: Any, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "dead.yaml").write_text(DEAD_LETTERS)
    app = await apps("bulky", "bulk_app", components=tmp_path)
    status, body, _ = await http("GET", f"{app.api}/v1.0/metadata")
    assert status == 200 and body["id"] == "bulky"
    assert sorted(body["subscriptions"], key=lambda s: s["topic"]) == [
        {
            "pubsubname": "pubsub",
            "topic": "bulk-orders",
            "metadata": {},
            "rules": {"rules": [{"match": "", "path": "/bulk"}]},
            "deadLetterTopic": "bulk-orders-dead",
            "type": "PROGRAMMATIC",
        },
        {
            "pubsubname": "pubsub",
            "topic": "bulk-orders-dead",
            "metadata": {},
            "rules": {"rules": [{"match": "", "path": "/dead"}]},
            "type": "DECLARATIVE",
        },
    ]
