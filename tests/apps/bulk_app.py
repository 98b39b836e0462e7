"""An HTTP app with a bulk subscription, the way Dapr apps declare one; started by `natrium run` in tests.

`bulk-orders` arrives in batches at `/bulk`: the first batch is refused with 500 (all retried),
event n=3 is answered RETRY once, n=5 gets no status once (retried), n=7 is answered DROP (so it
is dead-lettered to `bulk-orders-dead`, which a declarative Subscription routes to `/dead`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from aiohttp import web

posts: list[dict[str, Any]] = []
succeeded: list[int] = []
dead: list[dict[str, Any]] = []
seen: Counter[int] = Counter()


async def subscribe(request: web.Request) -> web.Response:
    return web.json_response(
        [
            {
                "pubsubname": "pubsub",
                "topic": "bulk-orders",
                "routes": {"default": "/bulk"},
                "deadLetterTopic": "bulk-orders-dead",
                "bulkSubscribe": {"enabled": True, "maxMessagesCount": 5, "maxAwaitDurationMs": 500},
            }
        ]
    )


async def bulk(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    entries = body["entries"]
    posts.append(
        {
            "type": body["type"],
            "pubsubname": body["pubsubname"],
            "topic": body["topic"],
            "id": body["id"],
            "entries": [{"n": e["event"]["data"]["n"], "contentType": e["contentType"]} for e in entries],
        }
    )
    if len(posts) == 1:
        return web.Response(status=500, text="not ready")
    statuses = []
    for entry in entries:
        n = entry["event"]["data"]["n"]
        seen[n] += 1
        if n == 3 and seen[n] == 1:
            statuses.append({"entryId": entry["entryId"], "status": "RETRY"})
        elif n == 5 and seen[n] == 1:
            continue  # no status: retried
        elif n == 7:
            statuses.append({"entryId": entry["entryId"], "status": "DROP"})
        else:
            succeeded.append(n)
            statuses.append({"entryId": entry["entryId"], "status": "SUCCESS"})
    return web.json_response({"statuses": statuses})


async def dead_letters(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    for entry in body["entries"]:
        event = entry["event"]
        dead.append({"n": event["data"]["n"], "from": event.get("deadletteroriginaltopic")})
    return web.json_response({"statuses": [{"entryId": e["entryId"], "status": "SUCCESS"} for e in body["entries"]]})


async def report(request: web.Request) -> web.Response:
    return web.json_response({"posts": posts, "succeeded": succeeded, "dead": dead})


def main() -> None:
    app = web.Application()
    app.router.add_get("/dapr/subscribe", subscribe)
    app.router.add_post("/bulk", bulk)
    app.router.add_post("/dead", dead_letters)
    app.router.add_get("/report", report)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None)


if __name__ == "__main__":
    main()
