"""How a user's state key becomes a KV key: Dapr's `keyPrefix` rule, then the reversible encoding."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.errors import NatriumError, malformed
from kernel.keyprefix import MAX_KEY_BYTES, SEPARATOR, key_prefix
from kernel.subjects import encode_token

__all__ = ["KeyPolicy", "MAX_KEY_BYTES"]


@dataclass(frozen=True)
class KeyPolicy:
    """Dapr's `keyPrefix` metadata: `appid` (default), `name`, `namespace`, `none`, or a literal prefix."""

    strategy: str
    store_name: str
    namespace: str | None = None

    def prefix(self, app_id: str | None) -> str:
        if self.strategy.lower() == "namespace":
            if not app_id:
                return ""
            return f"{self.namespace}.{app_id}{SEPARATOR}" if self.namespace else f"{app_id}{SEPARATOR}"
        return key_prefix(self.strategy, self.store_name, app_id)

    def kv_key(self, app_id: str | None, key: str) -> str:
        """The KV key for `key`; raises ERR_MALFORMED_REQUEST for keys Dapr would refuse."""
        if not key:
            raise malformed("state key must not be empty")
        if SEPARATOR in key and self.strategy.lower() != "none":
            raise NatriumError(
                "ERR_MALFORMED_REQUEST",
                f"input key/keyPrefix '{key}' can't contain '{SEPARATOR}'",
                status=400,
                details=[_illegal_key_detail()],
            )
        full = self.prefix(app_id) + key
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise malformed(f"state key is over {MAX_KEY_BYTES} bytes")
        return encode_token(full)


def _illegal_key_detail() -> dict[str, object]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "DAPR_STATE_ILLEGAL_KEY",
        "domain": "dapr.io",
        "metadata": {},
    }
