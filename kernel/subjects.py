"""Subject names on the bus, and the one reversible encoding for names that are not subject tokens.

Every building block lives under one root (`natrium` by default): `natrium.state.<store>.get`,
`natrium.invoke.<app-id>.<method>` ... Store names, keys and method paths may hold dots, spaces,
slashes or any UTF-8; `encode_token` maps them to a single valid token (and valid KV key) and
`decode_token` maps it back exactly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["Subjects", "decode_token", "encode_token", "DEFAULT_ROOT"]

DEFAULT_ROOT = "natrium"

# Characters that pass through unchanged. '=' is the escape; everything else is =XX of UTF-8 bytes.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_ESCAPED = re.compile(r"=([0-9A-F]{2})")
_ROOT_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def encode_token(name: str) -> str:
    """Map any non-empty string to one subject token that is also a valid NATS KV key."""
    if not name:
        raise ValueError("an empty name cannot be a subject token")
    raw = name.encode("utf-8")
    if all(b in _SAFE for b in raw):
        return name
    return "".join(chr(b) if b in _SAFE else f"={b:02X}" for b in raw)


def decode_token(token: str) -> str:
    """Invert `encode_token`."""
    if "=" not in token:
        return token
    out = bytearray()
    i = 0
    while i < len(token):
        match = _ESCAPED.match(token, i)
        if match:
            out.append(int(match.group(1), 16))
            i = match.end()
        else:
            out += token[i].encode("utf-8")
            i += 1
    return out.decode("utf-8")


@dataclass(frozen=True)
class Subjects:
    """Builds every subject natrium uses, under one configurable root."""

    root: str = DEFAULT_ROOT
    """First token(s) of every subject; `NATRIUM_ROOT` sets it for a whole deployment."""

    def __post_init__(self) -> None:
        if not _ROOT_RE.match(self.root):
            raise ValueError(f"invalid subject root {self.root!r}: use letters, digits, '-', '_' and dots")

    @classmethod
    def from_env(cls) -> Subjects:
        return cls(os.environ.get("NATRIUM_ROOT", DEFAULT_ROOT))

    def block(self, block: str, component: str, operation: str) -> str:
        """`<root>.<block>.<component>.<operation>`, the component name encoded."""
        return f"{self.root}.{block}.{encode_token(component)}.{operation}"

    def block_wildcard(self, block: str, operation: str) -> str:
        """What a block service listens on: every component of the block, one operation."""
        return f"{self.root}.{block}.*.{operation}"

    def events(self, pubsub: str, topic: str) -> str:
        """Stream subject of one topic: `<root>.events.<pubsub>.<topic>`."""
        return f"{self.root}.events.{encode_token(pubsub)}.{encode_token(topic)}"

    def events_wildcard(self, pubsub: str) -> str:
        return f"{self.root}.events.{encode_token(pubsub)}.*"

    def invoke(self, app_id: str, method: str) -> str:
        """Where a call to `method` of `app_id` goes: `<root>.invoke.<app-id>.<method>`."""
        return f"{self.root}.invoke.{encode_token(app_id)}.{encode_token(method or '/')}"

    def invoke_listen(self, app_id: str) -> tuple[str, str]:
        """(subject, queue group) an app's replicas listen on, sharing its calls."""
        return f"{self.root}.invoke.{encode_token(app_id)}.*", f"{self.root}.invoke.{encode_token(app_id)}"

    def stream(self, kind: str, component: str) -> str:
        """A JetStream stream name for a component, unique per root: `<KIND>_<root>_<component>`."""
        return f"{kind.upper()}_{encode_token(self.root)}_{encode_token(component)}"

    def component_of(self, subject: str) -> str:
        """The decoded component name in a `block` subject."""
        parts = subject[len(self.root) + 1 :].split(".")
        return decode_token(parts[1])
