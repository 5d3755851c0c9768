"""The server runs only messages typed CALL: raw binary-protocol bytes on a socket, typed REPLY,
EXCEPTION or ONEWAY, are answered with TApplicationException INVALID_MESSAGE_TYPE and never
reach the handler; the connection then serves a real call."""

from __future__ import annotations

import socket
import struct

import pytest
from thriftpy2.thrift import TApplicationException, TMessageType

VERSION_1 = 0x80010000


def message(kind: int, name: str, seqid: int) -> bytes:
    """A strict binary-protocol message whose arguments are the empty struct."""
    encoded = name.encode()
    return (
        struct.pack("!II", VERSION_1 | kind, len(encoded)) + encoded + struct.pack("!ib", seqid, 0)
    )


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def take(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    def i32(self) -> int:
        return int(struct.unpack("!i", self.take(4))[0])

    def string(self) -> str:
        return self.take(self.i32()).decode()

    def answer(self) -> tuple[int, str, int, dict[int, object]]:
        """(message type, name, seqid, the answer struct's fields by id)."""
        kind = self.i32() & 0xFF
        name, seqid = self.string(), self.i32()
        fields: dict[int, object] = {}
        while True:
            ftype = self.take(1)[0]
            if ftype == 0:
                return kind, name, seqid, fields
            fid = struct.unpack("!h", self.take(2))[0]
            if ftype == 11:
                fields[fid] = self.string()
            elif ftype == 8:
                fields[fid] = self.i32()
            else:
                raise AssertionError(f"unexpected field type {ftype}")


@pytest.mark.parametrize("kind", [TMessageType.REPLY, TMessageType.EXCEPTION, TMessageType.ONEWAY])
def test_a_message_that_is_not_a_call_is_refused_and_not_run(scheduler, monkeypatch, kind) -> None:
    handler = scheduler.api.handler
    calls: list[str] = []
    monkeypatch.setattr(handler, "ping", lambda: calls.append("ping"))
    with socket.create_connection(("127.0.0.1", scheduler.api.port), timeout=10) as sock:
        reader = Reader(sock)
        sock.sendall(message(kind, "ping", 7))
        answered, name, seqid, fields = reader.answer()
        assert (answered, name, seqid) == (TMessageType.EXCEPTION, "ping", 7)
        assert fields[2] == TApplicationException.INVALID_MESSAGE_TYPE
        assert "not a call" in str(fields[1])
        assert calls == []
        sock.sendall(message(TMessageType.CALL, "ping", 8))  # the connection still serves
        assert reader.answer()[:3] == (TMessageType.REPLY, "ping", 8)
        assert calls == ["ping"]
    assert scheduler.api.bad_input == 0
