"""The event loop of ``rofecare serve --workers N``: a busy worker waits a little before
it accepts a connection, so that an idle worker takes it.

Why: the workers share one listening socket and every one of them is woken when a client
connects; the first to call ``accept`` gets the connection. A worker working through a
large Bundle is already on a CPU, so it wins that race against an idle worker that the
kernel must first schedule: two Synthea batches POSTed at once went to one worker in three
runs of five, which then did both on one core (5.4 s) while the other idled (2.7-3.2 s when
each got one; docs/benchmarks.md). nginx meets the same with its ``accept_mutex_delay``.

The loop is uvloop's (or asyncio's, without uvloop) with ``create_server`` taken over
when uvicorn hands it the shared socket (``sock=``, multi-worker mode only): readiness
is awaited, then a busy worker (a request in flight, or a connection accepted in the last
``RECENT_SECONDS`` that may not have sent its request yet) waits ``BUSY_ACCEPT_DELAY_SECONDS``
and accepts only if nobody else has. An idle worker accepts at once, whatever kept-alive
connections it holds, so a quiet server answers as before; when every worker is busy a
new connection waits that much longer in the kernel's queue. Counting open connections
instead made a worker holding idle kept-alive connections give way to a busy one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from fhir_server import event_loop

BUSY_ACCEPT_DELAY_SECONDS = 0.02  # longer than an idle worker takes to wake on a busy machine
RECENT_SECONDS = 0.05
REQUEST_COROUTINE = "run_asgi"  # uvicorn runs each request as a task of this coroutine
ACCEPT_ERROR_PAUSE_SECONDS = 0.1

log = logging.getLogger("rofecare.serve")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def requests_in_flight(loop: asyncio.AbstractEventLoop) -> int:
    return sum(
        1
        for task in asyncio.all_tasks(loop)
        if getattr(task.get_coro(), "__name__", "") == REQUEST_COROUTINE
    )


class FairListener:
    """What ``create_server`` returns for the shared socket: uvicorn only closes it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: ProtocolFactory
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._accepted_at = -RECENT_SECONDS  # loop time of the last accept
        self._task: asyncio.Task[None] | None = loop.create_task(self._accept_forever())

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._task is not None

    def close(self) -> None:
        """Stop accepting; the socket itself is the supervisor's (uvicorn closes it)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)

    async def _accept_forever(self) -> None:
        """Accept until closed; a fault accepting one connection must not stop the worker
        from accepting the next (it would then serve only the connections it holds)."""
        while True:
            try:
                await self._accept_one()
            except asyncio.CancelledError:
                raise
            except Exception:  # out of file descriptors, say: log it, do not spin
                log.exception("Could not accept a connection")
                await asyncio.sleep(ACCEPT_ERROR_PAUSE_SECONDS)

    async def _accept_one(self) -> None:
        await self._readable()
        if self.busy():
            await asyncio.sleep(BUSY_ACCEPT_DELAY_SECONDS)  # an idle worker takes it
        try:
            connection, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        self._accepted_at = self._loop.time()
        connection.setblocking(False)
        try:
            await self._loop.connect_accepted_socket(self._factory, connection)
        except OSError as error:  # the client left already
            log.debug("Dropped a connection as it was accepted: %s", error)
            connection.close()
        except BaseException:
            connection.close()  # the client learns at once, not at its timeout
            raise

    def busy(self) -> bool:
        """A request in flight, or a connection accepted so lately that its request may
        not have come yet."""
        return (
            self._loop.time() - self._accepted_at < RECENT_SECONDS
            or requests_in_flight(self._loop) > 0
        )

    async def _readable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_reader(fd)


class _FairAccept:
    """``create_server`` for the shared socket of a multi-worker server."""

    async def create_server(  # type: ignore[no-untyped-def]
        self, protocol_factory, host=None, port=None, *, sock=None, ssl=None, backlog=100, **kw
    ):
        if sock is None or ssl is not None:
            return await super().create_server(  # type: ignore[misc]
                protocol_factory, host, port, sock=sock, ssl=ssl, backlog=backlog, **kw
            )
        sock.setblocking(False)
        sock.listen(backlog)  # bound by the supervisor; listening is the server's part
        return FairListener(self, sock, protocol_factory)  # type: ignore[arg-type]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's loop factory (``--loop fhir_server.fair_accept:new_event_loop``)."""
    loop_class = type("FairAcceptLoop", (_FairAccept, event_loop.loop_class()), {})
    loop: asyncio.AbstractEventLoop = loop_class()
    return loop
