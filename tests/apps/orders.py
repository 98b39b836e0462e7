"""A plain aiohttp app, the kind Dapr users run: started by `natrium run` in tests.

Env: APP_PORT (given by the test), DAPR_HTTP_PORT / APP_ID (set by natrium run), EVENTS_TOPIC.
"""

from __future__ import annotations

import asyncio
import json
import os

from aiohttp import web

received: list[dict] = []
calls = {"fail": 0}
health = {"ok": True}


async def neworder(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "verb": request.method,
            "path": request.path,
            "query": request.query_string,
            "body": (await request.read()).decode(),
            "caller": request.headers.get("dapr-caller-app-id"),
            "callee": request.headers.get("dapr-callee-app-id"),
            "custom": request.headers.get("x-custom"),
            "pid": os.getpid(),
            "app_id": os.environ.get("APP_ID"),
            "dapr_http_port": os.environ.get("DAPR_HTTP_PORT"),
        },
        headers={"x-reply": "yes"},
    )


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text=f"status {request.match_info['code']}")


async def fail(request: web.Request) -> web.Response:
    calls["fail"] += 1
    return web.Response(status=500, text="broken on purpose")


async def fail_count(request: web.Request) -> web.Response:
    return web.json_response(calls)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "1")))
    return web.Response(text="slow done")


async def subscribe(request: web.Request) -> web.Response:
    topic = os.environ.get("EVENTS_TOPIC", "orders-events")
    return web.json_response(
        [
            {
                "pubsubname": "pubsub",
                "topic": topic,
                "routes": {"rules": [{"match": 'event.type == "drop.me"', "path": "/gone"}], "default": "/events"},
                "deadLetterTopic": topic + "-dead",
            }
        ]
    )


async def events(request: web.Request) -> web.Response:
    envelope = json.loads(await request.read())
    received.append(envelope)
    if envelope.get("data") == {"answer": "retry-once"} and sum(e["id"] == envelope["id"] for e in received) == 1:
        return web.json_response({"status": "RETRY"})
    return web.json_response({"status": "SUCCESS"})


async def received_events(request: web.Request) -> web.Response:
    return web.json_response([{"id": e["id"], "data": e.get("data"), "ct": e.get("datacontenttype")} for e in received])


async def headers(request: web.Request) -> web.Response:
    """Echoes a repeated request header and answers with two cookies."""
    response = web.json_response({"multi": request.headers.getall("x-multi", [])})
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT")
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(status=200 if health["ok"] else 503)


async def set_health(request: web.Request) -> web.Response:
    """POST /health/up or /health/down: what the next health probes see."""
    health["ok"] = request.match_info["state"] == "up"
    return web.Response(status=204)


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/neworder", neworder)
    app.router.add_get("/status/{code}", status)
    app.router.add_route("*", "/fail", fail)
    app.router.add_get("/fail-count", fail_count)
    app.router.add_get("/slow", slow)
    app.router.add_get("/headers", headers)
    app.router.add_get("/dapr/subscribe", subscribe)
    app.router.add_post("/events", events)
    app.router.add_get("/received", received_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/health/{state}", set_health)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), print=None)


if __name__ == "__main__":
    main()
