"""One Dapr configuration store on one JetStream KV bucket.

- an item is stored as `{"value","metadata"}` JSON under its encoded key; version = KV revision;
- get all = a last-per-subject watch of the bucket, read to its end;
- subscribe = a KV watch: the store says which subjects to watch and from which stream sequence,
  so a subscriber sees every change made after it subscribed, in order, deletes included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import nats.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from kernel.components import Component
from kernel.errors import Codes, NatriumError
from kernel.jetstream import KV_OPERATION, JetStreamRejected, component_bucket, ensure_stream, kv_stream_config, publish
from kernel.subjects import decode_token, encode_token
from schemas.configuration import ConfigurationItem, SetItem, item_from_stored, safe_bucket_token, stored_bytes

__all__ = ["KvConfigStore", "failures_as", "go_list", "safe_bucket_token"]

log = logging.getLogger("natrium.configuration")

# Revisions kept per key: a watcher that falls behind (a slow callback, a reconnect) resumes from
# the stream, so it skips a revision only when a key changed more than this many times meanwhile.
# 64 is the most a NATS KV bucket allows.
DEFAULT_HISTORY = 64


@contextlib.contextmanager
def failures_as(code: str, message: str) -> Iterator[None]:
    """JetStream unreachable or refusing becomes `code` with daprd's message, marked retryable."""
    try:
        yield
    except NatriumError:
        raise
    except (nats.errors.Error, TimeoutError) as exc:
        raise NatriumError(code, f"{message}: {type(exc).__name__} {exc}".rstrip(), retryable=True) from None


class KvConfigStore:
    """The configuration operations of one store; `open()` creates or updates its bucket."""

    def __init__(self, nc: Client, component: Component) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.component = component
        self.name = component.name
        self.bucket = component_bucket(component, "config")
        self.stream = f"KV_{self.bucket}"
        self.prefix = f"$KV.{self.bucket}."
        self.replicas = component.meta_int("replicas", 1)
        self._kv: KeyValue | None = None

    def stream_config(self) -> api.StreamConfig:
        c = self.component
        history = c.meta_int("history", DEFAULT_HISTORY)
        if not 1 <= history <= 64:
            raise NatriumError(Codes.COMPONENT_INVALID, f"component {c.name!r}: history must be 1 to 64")
        return kv_stream_config(
            self.bucket,
            f"natrium configuration store {c.name}",
            c,
            max_msgs_per_subject=history,
            max_bytes=c.meta_int("maxBytes", -1),
            max_msg_size=c.meta_int("maxValueSize", -1),
        )

    async def open(self) -> None:
        await ensure_stream(self.js, self.stream_config())
        self._kv = await self.js.key_value(self.bucket)
        log.info("configuration store ready", extra={"store": self.name, "bucket": self.bucket})

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("configuration store not opened")
        return self._kv

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, keys: list[str]) -> dict[str, ConfigurationItem]:
        """The items of `keys` that exist (every item when `keys` is empty)."""
        message = f"failed to get {go_list(keys)} from Configuration store {self.name}"
        with failures_as(Codes.CONFIGURATION_GET, message):
            if not keys:
                return await self._all()
            wanted = list(dict.fromkeys(keys))
            found = await asyncio.gather(*(self._one(key) for key in wanted))
            return {key: item for key, item in zip(wanted, found, strict=True) if item is not None}

    async def _one(self, key: str) -> ConfigurationItem | None:
        try:
            entry = await self.kv.get(encode_token(key))
        except KeyNotFoundError:  # never written, deleted or purged
            return None
        return item_from_stored(entry.value or b"", entry.revision or 0)

    async def _all(self) -> dict[str, ConfigurationItem]:
        # The watcher's consumer dies with its interest; a short threshold frees it soon after.
        watcher = await self.kv.watchall(ignore_deletes=True, inactive_threshold=5.0)
        items: dict[str, ConfigurationItem] = {}
        try:
            while True:
                entry = await watcher.updates(timeout=5.0)
                if entry is None:  # the marker: every key's latest revision has been seen
                    return items
                items[decode_token(entry.key)] = item_from_stored(entry.value or b"", entry.revision or 0)
        finally:
            await watcher.stop()

    # -- writes ---------------------------------------------------------------------------------

    async def set(self, items: dict[str, SetItem]) -> dict[str, str]:
        """Write each item in order; returns the new versions. Not atomic: on a failure the keys
        before it stay written, and the error names them."""
        versions: dict[str, str] = {}
        for key, item in items.items():
            message = f"failed to set key {key!r} in Configuration store {self.name}"
            if versions:
                message += f" (already written: {', '.join(versions)})"
            with failures_as(Codes.CONFIGURATION_SET, message):
                try:
                    payload = stored_bytes(item.value, item.metadata)
                    ack = await publish(self.nc, self.prefix + encode_token(key), payload, None)
                except JetStreamRejected as exc:
                    raise NatriumError(
                        Codes.CONFIGURATION_SET, f"{message}: {exc.description}", retryable=exc.code == 503
                    ) from None
            versions[key] = str(ack["seq"])
        return versions

    async def delete(self, keys: list[str]) -> list[str]:
        """Delete the keys that exist (a KV delete marker each, so watchers see it); returns them."""
        deleted: list[str] = []
        for key in dict.fromkeys(keys):
            message = f"failed to delete key {key!r} in Configuration store {self.name}"
            with failures_as(Codes.CONFIGURATION_DELETE, message):
                if await self._one(key) is None:
                    continue
                try:
                    await publish(self.nc, self.prefix + encode_token(key), b"", {KV_OPERATION: "DEL"})
                except JetStreamRejected as exc:
                    raise NatriumError(Codes.CONFIGURATION_DELETE, f"{message}: {exc.description}") from None
            deleted.append(key)
        return deleted

    # -- subscriptions --------------------------------------------------------------------------

    def watch_subjects(self, keys: list[str]) -> list[str]:
        """Filter subjects of a watch; deduplicated, since a consumer refuses overlapping filters."""
        if not keys:
            return [f"{self.prefix}>"]
        return [self.prefix + encode_token(key) for key in dict.fromkeys(keys)]

    async def next_sequence(self, keys: list[str]) -> int:
        """The stream sequence the next write will get: a watch from here misses nothing after now."""
        message = f"failed to subscribe {go_list(keys)} from Configuration store {self.name}"
        with failures_as(Codes.CONFIGURATION_SUBSCRIBE, message):
            info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq) + 1


def go_list(keys: list[str]) -> str:
    """Keys the way daprd's messages print a Go slice: `[a b]`."""
    return "[" + " ".join(keys) + "]"
