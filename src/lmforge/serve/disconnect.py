"""Work that stops when its client goes away.

Neither Starlette nor uvicorn cancels a request handler when the client disconnects: the work would
run to the end and hold its batcher slot for nobody. `unless_disconnected` runs the work beside a
watcher of the connection and cancels it when the client leaves, which takes a queued request out
of its batcher and a generating sequence out of the running batch. Call it after the body has been
read (in a route), since the watcher reads the connection's next message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from lmforge.errors import LmforgeError

T = TypeVar("T")
POLL_S = 0.05


class ClientGone(LmforgeError):
    """The client disconnected before its answer was ready (logged as 499, counted as cancelled)."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone("the client disconnected")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
