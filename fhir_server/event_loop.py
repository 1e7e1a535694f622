"""The event loop of Rofecare's own processes: uvloop's where it is built, else asyncio's.

Why: a Bundle of 300 entries awaits thousands of futures (writes queued to the writer
thread, their commits, reads), and uvloop's are cheaper; and the loader's workers then run
the write path as ``rofecare serve``'s workers do (uvicorn picks uvloop). ``rofecare load``
of the Synthea sample with ``--jobs 2`` loaded in 8.5 s on uvloop against 8.8-9.4 s on
asyncio's loop, three runs each; alternated later on a noisier machine, the two could not
be told apart (9.6-9.8 s against 9.0-10.4 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_class() -> type[asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform
        return asyncio.SelectorEventLoop
    loop: type[asyncio.AbstractEventLoop] = uvloop.Loop
    return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on ``loop_class()``."""
    with asyncio.Runner(loop_factory=loop_class()) as runner:
        return runner.run(main)
