"""Instance histories on JetStream: one subject per instance, appended with optimistic concurrency.

- An orchestrator step lands as one atomic batch whose first message carries
  `Nats-Expected-Last-Subject-Sequence`: either the whole step commits on top of exactly the
  history the worker replayed, or nothing does (another step or a new event got there first).
  A step of at most one action is one message instead (`compact_step`), atomic by itself.
- Events that arrive from outside (activity results, timers, external events) are appended on
  their own with a `Nats-Msg-Id` derived from what they are, so a redelivered result is stored once.
- Continue-as-new rolls the subject up (`Nats-Rollup: sub`): the new execution starts a fresh,
  bounded history in the same atomic batch.
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client
from nats.js import api
from nats.nuid import NUID

from kernel.components import Component
from kernel.directget import read_subject
from kernel.errors import NatriumError
from kernel.jetstream import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    WRONG_LAST_SEQUENCE,
    JetStreamRejected,
    publish,
    storage_of,
)
from schemas.workflow import WorkflowLayout, compact_step, expand_event

__all__ = ["HistoryStore", "Conflict", "encode_event", "decode_events"]

MSG_ID = "Nats-Msg-Id"
# nats-server refuses atomic batches over 1000 messages.
MAX_BATCH = 1000


class Conflict(Exception):
    """The history moved on since the step was computed: nothing was written."""


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def decode_events(data: bytes, seq: int) -> list[dict[str, Any]]:
    """The events of one stored message (one, or a compacted step's three), each with `seq`."""
    event: dict[str, Any] = json.loads(data)
    event["seq"] = seq
    return expand_event(event)


class HistoryStore:
    """Appends to and reads the history stream of one workflow component."""

    def __init__(self, nc: Client, layout: WorkflowLayout, component: Component) -> None:
        self.nc = nc
        self.layout = layout
        self.component = component
        self._nuid = NUID()

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.layout.history_stream,
            description=f"natrium workflow histories of {self.component.name}",
            subjects=[self.layout.history_wildcard],
            allow_direct=True,
            allow_atomic=True,
            allow_rollup_hdrs=True,
            deny_delete=False,
            deny_purge=False,
            discard=api.DiscardPolicy.NEW,
            num_replicas=self.component.meta_int("replicas", 1),
            storage=storage_of(self.component),
        )

    async def read(self, instance_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """Events of an instance after `after_seq`, each with its stream `seq`."""
        messages = await read_subject(self.nc, self.layout.history_stream, self.layout.history(instance_id), after_seq)
        return [event for m in messages for event in decode_events(m.data, m.seq)]

    async def append(self, instance_id: str, event: dict[str, Any], msg_id: str | None = None) -> int:
        """Append one event from outside the orchestrator; returns its sequence (0 when a duplicate)."""
        headers = {MSG_ID: msg_id} if msg_id else None
        ack = await publish(self.nc, self.layout.history(instance_id), encode_event(event), headers)
        return 0 if ack.get("duplicate") else int(ack["seq"])

    async def create(self, instance_id: str, event: dict[str, Any], *, expected: int = 0, rollup: bool = False) -> int:
        """Write an `executionStarted` as the first message of a (new or rolled-up) history."""
        return await self.commit(instance_id, [event], expected=expected, rollup=rollup)

    async def commit(
        self, instance_id: str, events: list[dict[str, Any]], *, expected: int, rollup: bool = False
    ) -> int:
        """All of `events` on top of sequence `expected`, or none (Conflict). Returns the last sequence."""
        if not events:
            return expected
        events = compact_step(events)
        if len(events) > MAX_BATCH:
            raise NatriumError("ERR_WORKFLOW_STEP_TOO_LARGE", f"a step of {len(events)} events is over {MAX_BATCH}")
        subject = self.layout.history(instance_id)
        first: dict[str, str] = {EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected)}
        if rollup:
            first["Nats-Rollup"] = "sub"
        if len(events) == 1:
            return await self._single(subject, events[0], first)
        batch_id = self._nuid.next().decode()
        last = len(events)
        for number, event in enumerate(events, 1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number == 1:
                headers.update(first)
            if number < last:
                await self.nc.publish(subject, encode_event(event), headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await self.nc.request(subject, encode_event(event), headers=headers, timeout=5)
            ack = json.loads(reply.data or b"{}")
            error = ack.get("error")
            if error:
                if error.get("err_code") in WRONG_LAST_SEQUENCE:
                    raise Conflict(error.get("description", "wrong last sequence"))
                raise JetStreamRejected(error)
            return int(ack["seq"])
        raise AssertionError("unreachable")

    async def _single(self, subject: str, event: dict[str, Any], headers: dict[str, str]) -> int:
        try:
            ack = await publish(self.nc, subject, encode_event(event), headers)
        except JetStreamRejected as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise Conflict(exc.description) from None
            raise
        return int(ack["seq"])

    async def last_seq(self, instance_id: str) -> int:
        """Sequence of the instance's last event; 0 when it has none."""
        subject = self.layout.history(instance_id)
        reply = await self.nc.request(
            f"$JS.API.DIRECT.GET.{self.layout.history_stream}",
            json.dumps({"last_by_subj": subject}).encode(),
            timeout=5,
        )
        headers = reply.headers or {}
        if headers.get("Status") == "404":
            return 0
        if headers.get("Status"):
            raise JetStreamRejected({"code": int(headers["Status"]), "description": headers.get("Description", "")})
        return int(headers["Nats-Sequence"])

    async def purge(self, instance_id: str) -> None:
        request = json.dumps({"filter": self.layout.history(instance_id)}).encode()
        reply = await self.nc.request(f"$JS.API.STREAM.PURGE.{self.layout.history_stream}", request, timeout=5)
        body = json.loads(reply.data or b"{}")
        if "error" in body:
            raise JetStreamRejected(body["error"])
