"""Blocking work that is never abandoned half-way.

`asyncio.to_thread` cannot stop a thread: when its caller is cancelled (a client deadline, a
cancelled stream), the call returns at once while the thread goes on writing. Whatever the
caller does next then races that thread: it closes the file the thread still writes (and a
reused descriptor number sends the rest of the batch into another file), or releases the
lock that kept a second manifest save off the same temporary file. So storage runs such work
through `in_thread` / `finish_regardless`: a cancelled caller still waits for the work to end,
and only then sees its cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def finish_regardless(work: Awaitable[T]) -> T:
    """Await `work` (a task, a future, a coroutine) to its end even when cancelled meanwhile;
    a cancellation that arrived is raised once the work is over."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():
                raise  # the work itself was cancelled, not (only) us
            cancelled = True
            if not future.done():
                continue
            future.exception()  # retrieved: the cancellation is what our caller sees
            raise
        except BaseException:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
        if cancelled:
            raise asyncio.CancelledError
        return result


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in the loop's default executor, awaited to its end (see the module)."""
    return await finish_regardless(asyncio.get_running_loop().run_in_executor(None, fn, *args))
