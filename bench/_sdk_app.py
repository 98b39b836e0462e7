"""The SDK path's callee for bench/invoke.py: `App("calc")` serving method `echo` on the bus.

    python bench/_sdk_app.py NATS_URL

The method answers the request body unchanged. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adapters.invocation import InvokeRequest  # noqa: E402
from adapters.sdk.app import App  # noqa: E402

app = App("calc")


@app.method("echo")
async def echo(request: InvokeRequest) -> bytes:
    return request.body


async def main(url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.run(url, stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
