"""Declarative and programmatic subscriptions: CEL rules in order, defaults, scopes, dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.sdk import App, Event
from adapters.subscriptions import SubscriptionSpec, from_resources
from kernel.components import load_components
from kernel.errors import NatriumError
from tests.conftest import Inbox, PubsubRuntime

SUBSCRIPTION = """
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: order-routes
spec:
  pubsubname: {pubsub}
  topic: orders
  routes:
    rules:
    - match: event.type == "order.created" && event.data.qty > 10
      path: /big
    - match: event.type == "order.created"
      path: /created
    default: /other
  deadLetterTopic: orders-dead
scopes: [shop]
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: legacy
spec:
  pubsubname: {pubsub}
  topic: audit
  route: /audit
scopes: [someone-else]
"""


def write(tmp_path: Path, pubsub: str = "pubsub") -> Path:
    (tmp_path / "subs.yaml").write_text(SUBSCRIPTION.format(pubsub=pubsub))
    return tmp_path


def test_rules_are_tried_in_order_then_default(tmp_path: Path) -> None:
    routes, legacy = from_resources(load_components(write(tmp_path)).resources)
    assert routes.route({"type": "order.created", "data": {"qty": 50}}) == "/big"
    assert routes.route({"type": "order.created", "data": {"qty": 1}}) == "/created"
    assert routes.route({"type": "order.created"}) == "/created"  # missing field: the rule does not match
    assert routes.route({"type": "other"}) == "/other"
    assert routes.dead_letter_topic == "orders-dead" and routes.applies_to("shop") and not routes.applies_to("x")
    assert legacy.route({}) == "/audit" and legacy.scopes == ("someone-else",)


def test_no_match_and_no_default_routes_nowhere() -> None:
    spec = SubscriptionSpec.from_spec(
        {"pubsubname": "p", "topic": "t", "routes": {"rules": [{"match": "event.type == 'a'", "path": "/a"}]}}, "test"
    )
    assert spec.route({"type": "b"}) is None


@pytest.mark.parametrize(
    "spec, why",
    [
        ({"topic": "t", "route": "/x"}, "pubsubname and topic"),
        ({"pubsubname": "p", "topic": "t"}, "has no route"),
        (
            {"pubsubname": "p", "topic": "t", "routes": {"rules": [{"match": "event.type ==", "path": "/x"}]}},
            "invalid match",
        ),
        ({"pubsubname": "p", "topic": "t", "routes": {"rules": [{"path": "/x"}]}}, "needs match and path"),
    ],
)
def test_bad_specs_are_refused_by_name(spec: dict, why: str) -> None:
    with pytest.raises(NatriumError) as err:
        SubscriptionSpec.from_spec(spec, "Subscription 'x'")
    assert err.value.code == "ERR_COMPONENT_INVALID" and why in err.value.message and "'x'" in err.value.message


async def test_app_serves_declarative_routes_scoped_to_it(pubsub: PubsubRuntime, tmp_path: Path) -> None:
    big, created, other, dead = Inbox(), Inbox(), Inbox(), Inbox()
    app = App("shop", resources=write(tmp_path, pubsub.name))
    app.route("/big")(big)
    app.route("/created")(created)
    app.route("/other")(other)
    subscribed = app.subscriptions()
    assert [s.topic for s in subscribed] == ["orders"]  # "audit" is scoped to another app
    await app.start(client=pubsub.sdk("shop"))
    await pubsub.sdk("ops").subscribe(pubsub.name, "orders-dead", dead)

    for event_type, qty in [("order.created", 50), ("order.created", 2), ("order.cancelled", 1)]:
        event = {"type": event_type, "source": "s", "specversion": "1.0", "id": f"{event_type}-{qty}"}
        event["data"] = {"qty": qty}
        body = json.dumps(event).encode()
        await pubsub.client.publish(pubsub.name, "orders", body, content_type="application/cloudevents+json")
    assert [e.id for e in await big.wait(1)] == ["order.created-50"]
    assert [e.id for e in await created.wait(1)] == ["order.created-2"]
    assert [e.id for e in await other.wait(1)] == ["order.cancelled-1"]


async def test_programmatic_rules_and_unrouted_events_dead_letter(pubsub: PubsubRuntime) -> None:
    vip, dead = Inbox(), Inbox()
    app = App("router")

    @app.subscribe(pubsub.name, "signups", match='event.data.plan == "vip"', dead_letter_topic="unrouted")
    async def on_vip(event: Event) -> None:
        await vip(event)

    await app.start(client=pubsub.sdk("router"))
    await pubsub.sdk("ops").subscribe(pubsub.name, "unrouted", dead)
    await pubsub.client.publish(pubsub.name, "signups", {"plan": "vip"})
    await pubsub.client.publish(pubsub.name, "signups", {"plan": "free"})
    assert [e.data for e in await vip.wait(1)] == [{"plan": "vip"}]
    [unrouted] = await dead.wait(1)
    assert unrouted.data == {"plan": "free"} and "no route matched" in unrouted.envelope["deadletterreason"]


def test_same_topic_in_code_and_yaml_is_refused(tmp_path: Path) -> None:
    app = App("shop", resources=write(tmp_path))

    @app.subscribe("pubsub", "orders")
    async def handler(event: Event) -> None: ...

    with pytest.raises(NatriumError, match="both in code and by 'order-routes'"):
        app.subscriptions()
