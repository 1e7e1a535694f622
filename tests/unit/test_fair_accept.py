"""The accept loop of ``rofecare serve --workers N`` (fhir_server/fair_accept.py), in one
process on a real listening socket; tests/e2e/test_workers.py checks two workers share
connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from fhir_server import fair_accept


class Echo(asyncio.Protocol):
    """Answers each read with the bytes it read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
async def listening() -> AsyncIterator[socket.socket]:
    """Bound, not listening: as uvicorn's supervisor hands the socket to its workers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


async def echoed(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_the_shared_socket_is_served_by_the_accept_loop(listening: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    server = await fair_accept._FairAccept.create_server(  # the override, on this loop
        _Bound(loop), Echo, sock=listening, backlog=16
    )
    try:
        assert isinstance(server, fair_accept.FairListener)
        assert server.is_serving()
        port = listening.getsockname()[1]
        assert await echoed(port, b"one") == b"one"
        assert server.busy()  # a connection accepted a moment ago: its request may follow
        await asyncio.sleep(fair_accept.RECENT_SECONDS * 2)
        assert not server.busy()
    finally:
        server.close()
    assert not server.is_serving()


async def test_a_fault_accepting_one_connection_does_not_stop_the_next(
    listening: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    faults = [RuntimeError("no protocol for you")]

    def protocol() -> asyncio.Protocol:
        if faults:
            raise faults.pop()
        return Echo()

    server = await fair_accept._FairAccept.create_server(
        _Bound(loop), protocol, sock=listening, backlog=16
    )
    try:
        port = listening.getsockname()[1]
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, TimeoutError)):
            await echoed(port, b"lost")
        assert await echoed(port, b"served") == b"served"
    finally:
        server.close()
    assert "Could not accept a connection" in caplog.text


async def test_a_busy_listener_leaves_a_new_connection_to_an_idle_one(
    listening: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy itself, two listeners on one socket and one loop, with delays long
    enough that no scheduling decides it (tests/e2e/test_workers.py has two processes)."""
    monkeypatch.setattr(fair_accept, "RECENT_SECONDS", 30.0)  # busy once it has accepted
    monkeypatch.setattr(fair_accept, "BUSY_ACCEPT_DELAY_SECONDS", 0.5)
    loop = asyncio.get_running_loop()
    port = listening.getsockname()[1]
    first = await fair_accept._FairAccept.create_server(
        _Bound(loop), Echo, sock=listening, backlog=16
    )
    second: fair_accept.FairListener | None = None
    try:
        assert await echoed(port, b"one") == b"one"  # alone and idle: at once
        assert isinstance(first, fair_accept.FairListener)
        assert first.busy()
        second = await fair_accept._FairAccept.create_server(
            _Bound(loop), Echo, sock=listening, backlog=16
        )
        assert isinstance(second, fair_accept.FairListener)
        assert not second.busy()
        started = loop.time()
        assert await echoed(port, b"two") == b"two"
        assert loop.time() - started < fair_accept.BUSY_ACCEPT_DELAY_SECONDS
        assert second.busy()  # the idle one took it, and at once
        started = loop.time()
        assert await echoed(port, b"three") == b"three"  # both busy: taken, after the wait
        assert loop.time() - started >= fair_accept.BUSY_ACCEPT_DELAY_SECONDS
    finally:
        first.close()
        if second is not None:
            second.close()


def test_the_server_loop_is_built_on_this_platform_s_best_loop() -> None:
    loop = fair_accept.new_event_loop()
    try:
        assert isinstance(loop, fair_accept._FairAccept)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


class _Bound:
    """``self`` for calling ``_FairAccept.create_server`` on the running loop's methods."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> object:
        return getattr(self._loop, name)
