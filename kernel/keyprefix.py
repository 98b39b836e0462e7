"""Dapr's `keyPrefix` component metadata, shared by every store that keys data per app."""

from __future__ import annotations

__all__ = ["MAX_KEY_BYTES", "SEPARATOR", "key_prefix"]

SEPARATOR = "||"
# Keys become subject tokens, which travel in one protocol line (4 KiB by default); an encoded
# byte can take 3 characters.
MAX_KEY_BYTES = 1024


def key_prefix(strategy: str, store_name: str, app_id: str | None) -> str:
    """The prefix for `strategy`: `appid` (the default), `name`, `none`, or a literal prefix.

    Without an app id daprd stores the bare key under `appid`; so do we.
    """
    lowered = strategy.lower()
    if lowered == "none" or (lowered == "appid" and not app_id):
        return ""
    if lowered == "appid":
        return f"{app_id}{SEPARATOR}"
    if lowered == "name":
        return f"{store_name}{SEPARATOR}"
    return f"{strategy}{SEPARATOR}"
