"""Instance metadata (status, times, input, output, failure, custom status) in one KV bucket.

Every change is a compare-and-swap on the key's revision, so two replicas applying events of the
same instance never lose one another's change; `history_seq` orders them, so an older event that
arrives late never overwrites what a newer one wrote.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from kernel.components import Component
from kernel.jetstream import ensure_stream, kv_stream_config
from kernel.subjects import decode_token, encode_token
from schemas.workflow import (
    EventType,
    FailureDetails,
    InstanceState,
    RuntimeStatus,
    WorkflowLayout,
    format_time,
    utc_now,
)

__all__ = ["MetadataStore", "apply_event"]

_ATTEMPTS = 20
_REMEMBERED = 10_000
Change = Callable[[InstanceState | None], InstanceState | None]


class MetadataStore:
    """The metadata bucket of one workflow component."""

    def __init__(self, nc: Client, layout: WorkflowLayout, component: Component) -> None:
        self.nc = nc
        self.layout = layout
        self.component = component
        self.bucket = layout.metadata_bucket
        self._kv: KeyValue | None = None
        # Records this process wrote last, with their revisions: most changes then need no read.
        self._known: OrderedDict[str, tuple[InstanceState | None, int]] = OrderedDict()

    async def open(self) -> None:
        js = self.nc.jetstream()
        config = kv_stream_config(
            self.bucket, f"natrium workflow instances of {self.component.name}", self.component, deny_delete=False
        )
        await ensure_stream(js, config)
        self._kv = await js.key_value(self.bucket)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("metadata store not opened")
        return self._kv

    async def get(self, instance_id: str) -> InstanceState | None:
        state, _ = await self._read(instance_id)
        return state

    async def _read(self, instance_id: str) -> tuple[InstanceState | None, int]:
        try:
            entry = await self.kv.get(encode_token(instance_id))
        except NotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return InstanceState.model_validate_json(entry.value), entry.revision or 0

    async def change(self, instance_id: str, change: Change, *, fresh: bool = False) -> InstanceState | None:
        """Apply `change` to the current record (None: none yet) until the write wins; returns the result.

        `change` returning None leaves the record as it is. The first attempt starts from what
        this process last wrote or read, if it has it (the write then proves it still current);
        `fresh` says there is surely no record yet.
        """
        key = encode_token(instance_id)
        known = (None, 0) if fresh else self._known.get(instance_id)
        for _ in range(_ATTEMPTS):
            current, revision = known if known is not None else await self._read(instance_id)
            known = None
            updated = change(current)
            if updated is None:
                if current is not None:
                    self._remember(instance_id, current, revision)
                return current
            payload = updated.model_dump_json(by_alias=True, exclude_none=True).encode()
            try:
                if revision:
                    written = await self.kv.update(key, payload, last=revision)
                else:
                    written = await self.kv.create(key, payload)
            except (KeyWrongLastSequenceError, BadRequestError):
                continue  # someone else wrote first: apply the change to what they wrote
            self._remember(instance_id, updated, written)
            return updated
        raise RuntimeError(f"metadata of {instance_id} kept changing")

    def _remember(self, instance_id: str, state: InstanceState, revision: int) -> None:
        self._known[instance_id] = (state, revision)
        self._known.move_to_end(instance_id)
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)

    async def delete(self, instance_id: str) -> None:
        self._known.pop(instance_id, None)
        await self.kv.purge(encode_token(instance_id))

    async def list(self, status: RuntimeStatus | None, limit: int) -> list[InstanceState]:
        try:
            keys = await self.kv.keys()
        except (NoKeysError, NotFoundError):
            return []
        out: list[InstanceState] = []
        for key in sorted(keys):
            state = await self.get(decode_token(key))
            if state is None or (status is not None and state.runtime_status != status):
                continue
            out.append(state)
            if len(out) >= limit:
                break
        return out


def apply_event(current: InstanceState | None, instance_id: str, event: dict[str, Any]) -> InstanceState | None:
    """The metadata record after `event` (None: nothing to change). Pure, so replicas agree."""
    kind = event["type"]
    seq = int(event.get("seq", 0))
    stamp = str(event.get("timestamp") or format_time(utc_now()))
    if current is not None and seq and seq <= current.history_seq and kind != EventType.EXECUTION_COMPLETED:
        return None  # reflected already, or older than what is
    if kind == EventType.EXECUTION_STARTED:
        parent = event.get("parentInstance") or {}
        continued = current is not None and not current.runtime_status.is_terminal
        return InstanceState(
            instance_id=instance_id,
            name=str(event.get("name", "")),
            runtime_status=RuntimeStatus.RUNNING if continued else RuntimeStatus.PENDING,
            created_at=current.created_at if continued and current else stamp,
            last_updated_at=stamp,
            execution_id=str(event.get("executionId", "")),
            input=event.get("input"),
            parent_instance_id=parent.get("instanceId"),
            parent_task_id=parent.get("taskScheduledId"),
            parent_execution_id=parent.get("executionId"),
            history_seq=seq,
        )
    if current is None:
        return None
    if kind == EventType.ORCHESTRATOR_COMPLETED:
        custom = event.get("customStatus")
        status = current.runtime_status
        if status is RuntimeStatus.PENDING:
            status = RuntimeStatus.RUNNING
        if status == current.runtime_status and custom == current.custom_status:
            return None
        return current.model_copy(
            update={"runtime_status": status, "custom_status": custom, "last_updated_at": stamp, "history_seq": seq}
        )
    if kind == EventType.EXECUTION_COMPLETED:
        status = RuntimeStatus(event.get("orchestrationStatus", RuntimeStatus.COMPLETED.value))
        # The end of an execution is final, whatever arrived before it; a late one of an older
        # execution (before a continue-as-new) changes nothing.
        if status is RuntimeStatus.CONTINUED_AS_NEW or current.runtime_status.is_terminal:
            return None
        if event.get("executionId") and event.get("executionId") != current.execution_id:
            return None
        details = event.get("failureDetails")
        return current.model_copy(
            update={
                "runtime_status": status,
                "output": event.get("result"),
                "custom_status": event.get("customStatus", current.custom_status),
                "failure_details": details and FailureDetails.model_validate(details),
                "last_updated_at": stamp,
                "history_seq": seq,
            }
        )
    if kind in (EventType.EXECUTION_SUSPENDED, EventType.EXECUTION_RESUMED):
        if current.runtime_status.is_terminal:
            return None
        status = RuntimeStatus.SUSPENDED if kind == EventType.EXECUTION_SUSPENDED else RuntimeStatus.RUNNING
        return current.model_copy(update={"runtime_status": status, "last_updated_at": stamp, "history_seq": seq})
    return None
