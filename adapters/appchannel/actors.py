"""Actors hosted by an HTTP app: the `ActorApp` side of `natrium run`, speaking daprd's callback protocol.

The app lists its actor types on `GET /dapr/config`; each turn is a `PUT` on
`/actors/{type}/{id}/method/{method}` (reminders on `.../method/remind/{name}`, timers on
`.../method/timer/{name}`), and a deactivation is `DELETE /actors/{type}/{id}`. The app's answer
comes back unchanged (status, headers, body): what counts as an error is the caller's business.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import aiohttp
from opentelemetry import trace
from pydantic import ValidationError
from yarl import URL

from adapters.actors.app import ActorCall, ActorReply, CallKind
from adapters.appchannel.http_app import HttpApp
from adapters.invocation import forwardable
from kernel.errors import Codes, NatriumError
from kernel.tracing import inject
from schemas.actors import ActorConfig

__all__ = ["HttpActorApp"]

log = logging.getLogger("natrium.appchannel.actors")

# The callback path segment of each kind of turn, as daprd builds it.
_PREFIX = {CallKind.METHOD: "", CallKind.REMINDER: "remind/", CallKind.TIMER: "timer/"}


class HttpActorApp:
    """`ActorApp` over an opened `HttpApp` (its session, address and app token)."""

    def __init__(self, app: HttpApp, config_retries: int = 5) -> None:
        self.app = app
        self.config_retries = config_retries
        self._config: ActorConfig | None = None

    async def actor_config(self) -> ActorConfig:
        """`GET /dapr/config`, read once: like daprd, any answer but a valid 200 means no actors."""
        if self._config is None:
            self._config = await self._read_config()
        return self._config

    async def _read_config(self) -> ActorConfig:
        session = self._session()
        for attempt in range(self.config_retries):
            try:
                async with session.get(self.app.base + "/dapr/config", headers=self._headers({})) as response:
                    body = await response.read()
                    status = response.status
            except aiohttp.ClientError as exc:
                if attempt + 1 == self.config_retries:
                    log.warning("GET /dapr/config failed, hosting no actors: %s", exc)
                    return ActorConfig()
                await asyncio.sleep(0.5)
                continue
            if status >= 500 and attempt + 1 < self.config_retries:
                await asyncio.sleep(0.5)  # still warming up
                continue
            break
        if status != 200:
            return ActorConfig()
        try:
            return ActorConfig.model_validate(json.loads(body or b"{}"))
        except (ValueError, ValidationError) as exc:
            log.warning("GET /dapr/config answered an unreadable body, hosting no actors: %s", exc)
            return ActorConfig()

    async def call(self, call: ActorCall) -> ActorReply:
        """PUT the turn to the app; transport failures are errors, any HTTP answer is a reply."""
        path = (
            f"/actors/{_segment(call.actor_type)}/{_segment(call.actor_id)}/method/"
            f"{_PREFIX[call.kind]}{_segment(call.name)}"
        )
        headers = self._headers(call.headers)
        # Reminder and timer bodies are JSON; a method's body keeps the caller's type (JSON if none).
        given = [k for k in headers if k.lower() == "content-type"]
        if call.kind is not CallKind.METHOD or not given:
            for key in given:
                del headers[key]
            headers["Content-Type"] = "application/json"
        try:
            async with self._session().put(self._url(path), data=call.body, headers=headers) as response:
                body = await response.read()
                return ActorReply(response.status, body, forwardable(response.headers))
        except aiohttp.ClientError as exc:
            raise NatriumError(
                Codes.ACTOR_INVOKE_METHOD,
                f"error invoke actor method: app {self.app.app_id} is not reachable: {exc}",
                status=500,
                retryable=True,
            ) from None

    async def deactivate(self, actor_type: str, actor_id: str) -> None:
        """DELETE the activation; a refusal is logged, the activation ends anyway."""
        path = f"/actors/{_segment(actor_type)}/{_segment(actor_id)}"
        try:
            async with self._session().delete(self._url(path), headers=self._headers({})) as response:
                body = await response.read()
                if response.status != 200:
                    log.warning(
                        "app refused to deactivate %s/%s: (%d) %s",
                        actor_type,
                        actor_id,
                        response.status,
                        body[:200].decode(errors="replace"),
                    )
        except aiohttp.ClientError as exc:
            log.warning("deactivating %s/%s failed: %s", actor_type, actor_id, exc)

    def _session(self) -> aiohttp.ClientSession:
        if self.app.session is None:
            raise NatriumError(Codes.ACTOR_NO_APP_CHANNEL, "app channel is not initialized", status=400)
        return self.app.session

    def _url(self, path: str) -> URL:
        return URL(self.app.base + path, encoded=True)

    def _headers(self, given: dict[str, str]) -> dict[str, str]:
        headers = forwardable(given)
        if self.app.api_token:
            headers["dapr-api-token"] = self.app.api_token  # APP_API_TOKEN, as daprd sends it
        # A span of our own replaces the caller's trace headers; without one they pass as given.
        if trace.get_current_span().get_span_context().is_valid:
            inject(headers)
        return headers


def _segment(value: str) -> str:
    # One path segment each: an id with `/`, `?` or spaces must not change the route.
    return quote(value, safe="")
