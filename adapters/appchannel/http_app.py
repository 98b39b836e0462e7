"""The app side of the channel: calls into an HTTP app the way daprd does.

Forwards invocations (status, headers and body back unchanged), reads `GET /dapr/subscribe`, and
delivers events as `POST <route>` with `application/cloudevents+json`, reading the answer with
Dapr's rules: 2xx with no or non-JSON body or `{"status":"SUCCESS"}` is SUCCESS, `RETRY`/`DROP`
as written (case-sensitive, anything else RETRY), 404 is DROP, any other status RETRY.
Bulk subscriptions get a batch in one `POST <route>` (`type: com.dapr.event.sent.bulk`) and answer
one status per entry (`bulk_statuses`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from adapters.delivery import Event, Retry, Status
from adapters.invocation import InvokeRequest, InvokeResponse, forwardable
from adapters.subscriptions import SubscriptionSpec
from kernel.errors import Codes, NatriumError
from kernel.tracing import inject

__all__ = ["HttpApp", "answer_status", "bulk_statuses"]

BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"

log = logging.getLogger("natrium.appchannel")


class HttpApp:
    """An app listening on `host:port`; `open()` before use, `close()` after."""

    def __init__(self, app_id: str, port: int, host: str = "127.0.0.1", api_token: str | None = None) -> None:
        self.app_id = app_id
        self.base = f"http://{host}:{port}"
        self.host, self.port = host, port
        self.api_token = api_token
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        # No total timeout: an invocation's deadline is the caller's (Resiliency or its timeout).
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def wait_for_port(self, timeout: float, exited: asyncio.Event | None = None) -> None:
        """Return once the app accepts connections; a clear error if it never does or dies first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                return
            except OSError:
                pass
            if exited is not None and exited.is_set():
                raise NatriumError("ERR_APP_EXITED", f"app {self.app_id} exited before opening port {self.port}")
            if time.monotonic() > deadline:
                raise NatriumError(
                    "ERR_APP_PORT_TIMEOUT", f"app {self.app_id} did not open port {self.port} within {timeout:g}s"
                )
            await asyncio.sleep(0.1)

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = dict(extra)
        if self.api_token:
            headers["dapr-api-token"] = self.api_token  # APP_API_TOKEN, as daprd sends it
        return inject(headers)

    async def forward(self, request: InvokeRequest) -> InvokeResponse:
        assert self.session is not None
        url = self.base + request.method + (f"?{request.query}" if request.query else "")
        headers = self._headers(request.headers)
        headers["dapr-callee-app-id"] = self.app_id
        try:
            async with self.session.request(request.verb, url, data=request.body, headers=headers) as response:
                body = await response.read()
                return InvokeResponse(response.status, forwardable(response.headers), body)
        except aiohttp.ClientError as exc:
            raise NatriumError(
                Codes.DIRECT_INVOKE, f"failed to invoke, id: {self.app_id}, err: the app is not reachable: {exc}"
            ) from None

    async def subscriptions(self, retries: int = 5) -> list[SubscriptionSpec]:
        """The app's programmatic subscriptions; 404 means none. Retried while the app warms up."""
        assert self.session is not None
        for attempt in range(retries):
            try:
                async with self.session.get(self.base + "/dapr/subscribe", headers=self._headers({})) as response:
                    if response.status == 404:
                        return []
                    if response.status >= 500 and attempt + 1 < retries:
                        await asyncio.sleep(0.5)
                        continue
                    if response.status != 200:
                        raise NatriumError(Codes.COMPONENT_INVALID, f"GET /dapr/subscribe answered {response.status}")
                    entries = json.loads(await response.read() or b"[]")
                    break
            except (aiohttp.ClientError, ValueError) as exc:
                if attempt + 1 == retries:
                    raise NatriumError(Codes.COMPONENT_INVALID, f"GET /dapr/subscribe failed: {exc}") from None
                await asyncio.sleep(0.5)
        if not isinstance(entries, list):
            raise NatriumError(Codes.COMPONENT_INVALID, "GET /dapr/subscribe must answer a JSON array")
        return [
            SubscriptionSpec.from_spec(e, f"app {self.app_id} /dapr/subscribe") for e in entries if isinstance(e, dict)
        ]

    async def deliver(self, route: str, event: Event) -> Status:
        """POST the event to `route`; raises Retry on transport errors (redelivered later)."""
        assert self.session is not None
        headers = self._headers(
            {"Content-Type": "application/cloudevents+json", "pubsubName": event.pubsub, "topic": event.topic}
        )
        body = json.dumps(event.envelope, separators=(",", ":")).encode()
        try:
            async with self.session.post(self.base + "/" + route.lstrip("/"), data=body, headers=headers) as response:
                payload = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            log.warning("event delivery failed: %s", exc, extra={"event_id": event.id, "route": route})
            raise Retry(str(exc)) from None
        return answer_status(status, payload)

    async def deliver_bulk(self, route: str, events: list[Event]) -> list[Status]:
        """POST a batch to `route` as daprd's bulk subscribe does; one status per event, in order.
        A transport error retries them all."""
        assert self.session is not None and events
        entry_ids = [str(uuid.uuid4()) for _ in events]
        body = {
            "id": str(uuid.uuid4()),
            "type": BULK_EVENT_TYPE,
            "pubsubname": events[0].pubsub,
            "topic": events[0].topic,
            "metadata": {"pubsubName": events[0].pubsub},
            "entries": [
                {"entryId": entry_id, "event": e.envelope, "contentType": CLOUDEVENTS, "metadata": {}}
                for entry_id, e in zip(entry_ids, events, strict=True)
            ],
        }
        headers = self._headers(
            {"Content-Type": "application/json", "pubsubName": events[0].pubsub, "topic": events[0].topic}
        )
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self.session.post(self.base + "/" + route.lstrip("/"), data=data, headers=headers) as response:
                payload = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            log.warning("bulk delivery failed: %s", exc, extra={"route": route, "events": len(events)})
            return [Status.RETRY] * len(events)
        return bulk_statuses(status, payload, entry_ids)

    async def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        """One plain call into the app (input bindings); raises aiohttp.ClientError or TimeoutError."""
        assert self.session is not None
        url = URL(self.base + "/" + quote(path.lstrip("/"), safe="/?&=:@%+,;-._~"), encoded=True)
        call = self.session.request(
            method, url, data=body, headers=self._headers(headers), timeout=aiohttp.ClientTimeout(timeout)
        )
        async with call as response:
            return response.status, await response.read()

    async def health_probe(self, path: str, timeout: float) -> bool:
        """Dapr's HTTP app health probe: GET `path`, healthy on a 2xx."""
        status, _ = await self.send("GET", path, None, {}, timeout)
        return 200 <= status < 300

    async def post_configuration(self, store: str, key: str, body: bytes, timeout: float) -> int:
        """POST a configuration update to `/configuration/{store}/{key}`, as daprd does; returns the
        status. Raises aiohttp.ClientError or TimeoutError when the app cannot be reached in time."""
        assert self.session is not None
        # Percent-encoded, so a key with `?`, `#` or spaces stays one path; `/` is kept, as daprd keeps it.
        path = f"/configuration/{quote(store, safe='')}/{quote(key, safe='/')}"
        headers = self._headers({"Content-Type": "application/json"})
        url = URL(self.base + path, encoded=True)
        async with self.session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(timeout)) as r:
            await r.read()
            return r.status


CLOUDEVENTS = "application/cloudevents+json"


def bulk_statuses(status: int, body: bytes, entry_ids: list[str]) -> list[Status]:
    """Dapr's reading of an app's answer to a bulk delivery: 404 drops every entry, any other
    non-2xx or an unreadable body retries every entry, and an entry without a (valid) status retries."""
    if status == 404:
        return [Status.DROP] * len(entry_ids)
    answered: dict[str, Any] = {}
    if 200 <= status < 300:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        listed = parsed.get("statuses") if isinstance(parsed, dict) else None
        for item in listed if isinstance(listed, list) else []:
            if isinstance(item, dict) and isinstance(item.get("entryId"), str):
                answered[item["entryId"]] = item.get("status")
    statuses = []
    for entry_id in entry_ids:
        try:
            statuses.append(Status(str(answered.get(entry_id))))
        except ValueError:
            statuses.append(Status.RETRY)
    return statuses


def answer_status(status: int, body: bytes) -> Status:
    """Dapr's reading of an app's answer to an event delivery."""
    if status == 404:
        return Status.DROP
    if not 200 <= status < 300:
        return Status.RETRY
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        return Status.SUCCESS
    if not isinstance(parsed, dict) or "status" not in parsed or parsed["status"] in (None, ""):
        return Status.SUCCESS
    try:
        return Status(parsed["status"])
    except ValueError:
        return Status.RETRY
