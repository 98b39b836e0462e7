"""natrium's Python SDK: talk to the blocks straight over the bus, no gateway, no sidecar.

client = await Client.connect(app_id="checkout")
await client.publish("pubsub", "orders", {"id": 1})
await client.subscribe("pubsub", "orders", handle)      # handle(event) -> Status | None

app = App("orders")

@app.subscribe("pubsub", "orders", dead_letter_topic="orders-dlq")
async def on_order(event: Event) -> Status: ...

await app.run()
"""

from adapters.delivery import Drop, Event, Retry, Status, Subscription
from adapters.invocation import InvokeRequest, InvokeResponse
from adapters.sdk.actors import Actor, ActorProxy
from adapters.sdk.app import App
from adapters.sdk.client import Client

__all__ = [
    "Actor",
    "ActorProxy",
    "App",
    "Client",
    "Drop",
    "Event",
    "InvokeRequest",
    "InvokeResponse",
    "Retry",
    "Status",
    "Subscription",
]
