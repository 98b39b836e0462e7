"""`bindings.http`: the HTTP verbs as operations against one base `url`.

Request metadata: `path` (appended to the url), `errorIfNot2XX`, and any key starting with a
capital letter is sent as a header. The reply carries `statusCode`, `status` and the response
headers as metadata, also when a non-2xx answer is reported as an error.
"""

from __future__ import annotations

from typing import ClassVar

import aiohttp

from adapters.bindings.base import BindingRequest, BindingResponse, Driver, DriverEnv, TargetError, invalid
from kernel.components import Component
from kernel.tracing import inject

__all__ = ["HttpBinding"]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_JSON = "application/json; charset=utf-8"


class HttpBinding(Driver):
    operations: ClassVar[tuple[str, ...]] = (
        "create",
        "get",
        "head",
        "post",
        "put",
        "patch",
        "delete",
        "options",
        "trace",
    )

    def __init__(self, component: Component, env: DriverEnv) -> None:
        super().__init__(component, env)
        self.url = self.required("url")
        if not self.url.startswith(("http://", "https://")):
            raise invalid(component, f"metadata url must be an http:// or https:// URL, got {self.url!r}")
        self.timeout = self.duration("responseTimeout", "30s")
        self.max_body = component.meta_int("maxResponseBodySize", 0)
        self.error_if_not_2xx = component.meta_bool("errorIfNot2XX", True)
        token, header = component.meta("securityToken"), component.meta("securityTokenHeader")
        self.token_header = {header: token} if token and header else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), auto_decompress=True
            )
        return self._session

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        method = "POST" if request.operation == "create" else request.operation.upper()
        url = self.url
        if request.meta("path"):
            url = url.rstrip("/") + "/" + request.meta("path").lstrip("/")
        raw_flag = request.meta("errorIfNot2XX")
        error_if_not_2xx = raw_flag.strip().lower() in ("true", "1", "yes") if raw_flag else self.error_if_not_2xx
        headers = {"Accept": _JSON}
        body = request.data if method in _WITH_BODY else None
        if body is not None:
            headers["Content-Type"] = _JSON
        headers.update(self.token_header)
        headers.update({k: v for k, v in request.metadata.items() if k[:1].isupper()})
        try:
            async with self._client().request(method, url, data=body, headers=inject(headers)) as response:
                data = await (response.content.read(self.max_body) if self.max_body > 0 else response.read())
                metadata = {"statusCode": str(response.status), "status": f"{response.status} {response.reason or ''}"}
                for key in response.headers:
                    metadata[key] = ", ".join(response.headers.getall(key))
        except TimeoutError:
            raise TargetError(f"{method} {url}: no response within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise TargetError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if error_if_not_2xx and not 200 <= response.status < 300:
            raise TargetError(f"received status code {response.status}", metadata)
        return BindingResponse(data, metadata)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
