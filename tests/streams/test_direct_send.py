"""A frame for an idle WebSocket goes straight to its socket; whatever the
socket does not take, and every frame behind something still waiting,
goes through Twisted's buffer in order. (tests/streams/test_slow_subscriber.py
drives the same path under daphne with a client that stops reading.)"""

from __future__ import annotations

from collections import deque

import pytest

from streams.fanout import _send_directly

FRAME = b"\x81\x05hello"


class FakeSocket:
    def __init__(self, takes: int | None = None, error: type | None = None) -> None:
        self.takes = takes
        self.error = error
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        if self.error:
            raise self.error()
        taken = data if self.takes is None else data[: self.takes]
        self.sent.append(taken)
        return len(taken)


class FakeTransport:
    """What ``_send_directly`` reads of Twisted's TCP connection."""

    def __init__(self, socket: FakeSocket) -> None:
        self.socket = socket
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self.connected = True
        self.disconnecting = False
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class FakeProtocol:
    def __init__(self, socket: FakeSocket) -> None:
        self.transport = FakeTransport(socket)
        self.send_queue: deque = deque()
        self._perMessageCompress = None


def test_an_idle_socket_gets_the_frame_at_once():
    protocol = FakeProtocol(FakeSocket())

    assert _send_directly(protocol, FRAME)

    assert protocol.transport.socket.sent == [FRAME]
    assert protocol.transport.written == []


def test_what_the_socket_does_not_take_goes_to_the_buffer():
    protocol = FakeProtocol(FakeSocket(takes=3))

    assert _send_directly(protocol, FRAME)

    assert protocol.transport.socket.sent == [FRAME[:3]]
    assert protocol.transport.written == [FRAME[3:]]


@pytest.mark.parametrize("error", [BlockingIOError, ConnectionResetError])
def test_a_full_or_broken_socket_leaves_the_frame_to_twisted(error):
    protocol = FakeProtocol(FakeSocket(error=error))

    assert _send_directly(protocol, FRAME)

    assert protocol.transport.written == [FRAME]


@pytest.mark.parametrize(
    "waiting",
    ["buffered", "queued", "temporary", "disconnecting", "closed", "compressed"],
)
def test_a_frame_behind_something_waiting_goes_the_usual_way(waiting):
    protocol = FakeProtocol(FakeSocket())
    transport = protocol.transport
    if waiting == "buffered":
        transport.dataBuffer = b"earlier"
    elif waiting == "queued":
        protocol.send_queue.append((b"earlier", False))
    elif waiting == "temporary":
        transport._tempDataBuffer.append(b"earlier")
    elif waiting == "compressed":
        protocol._perMessageCompress = object()
    elif waiting == "disconnecting":
        transport.disconnecting = True
    else:
        transport.connected = False

    assert not _send_directly(protocol, FRAME)

    assert transport.socket.sent == [] and transport.written == []
