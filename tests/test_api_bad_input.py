"""Bad input on the API port: garbage, truncated messages, huge length prefixes, wrong field
types, unknown methods, wrong protocol versions, and well-formed calls with invalid values.

Bounded: a few hundred connections, short socket timeouts. For every raw case the server
answers or closes that connection (we half-close our side, so a server still waiting for bytes
sees EOF; a few cases leave the connection open and do not wait for it), keeps serving others,
and does not grow its memory; well-formed but invalid calls get an `InvalidRequest` naming the
field, and write nothing."""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.rpc import make_client
from thriftpy2.thrift import TApplicationException, TMessageType, TType
from thriftpy2.transport import TMemoryBuffer

from api.idl import Service
from api.idl import pulsegate as t

from cluster import FAST_SIM

SEED = 20261122
READ_TIMEOUT_S = 2.0  # how long the server may take to answer or close a half-closed connection
STALL_S = 0.5  # a raw case plus a ping on another connection takes milliseconds
HUGE = 2_000_000_000
MAX_RSS_GROWTH_MB = 200
VERSION_1 = 0x80010000

# -- the wire ------------------------------------------------------------------------------------


def encode(method: str, seqid: int = 1, **args: Any) -> bytes:
    """A well-formed call, encoded by thriftpy2's (pure-Python) binary protocol."""
    buf = TMemoryBuffer()
    proto = TBinaryProtocol(buf)
    proto.write_message_begin(method, TMessageType.CALL, seqid)
    getattr(Service, f"{method}_args")(**args).write(proto)
    proto.write_message_end()
    return bytes(buf.getvalue())


def decode(data: bytes) -> Any:
    """The first reply in `data`: the result struct, or the TApplicationException."""
    proto = TBinaryProtocol(TMemoryBuffer(data))
    name, mtype, _ = proto.read_message_begin()
    if mtype == TMessageType.EXCEPTION:
        error = TApplicationException()
        error.read(proto)
        return error
    result = getattr(Service, f"{name}_result")()
    result.read(proto)
    return result


def i8(v: int) -> bytes:
    return struct.pack("!b", v)


def i16(v: int) -> bytes:
    return struct.pack("!h", v)


def i32(v: int) -> bytes:
    return struct.pack("!i", v)


def string(v: bytes | str, length: int | None = None) -> bytes:
    data = v.encode() if isinstance(v, str) else v
    return i32(len(data) if length is None else length) + data


def header(method: str, mtype: int = TMessageType.CALL, seqid: int = 7) -> bytes:
    return (
        i32(struct.unpack("!i", struct.pack("!I", VERSION_1 | mtype))[0])
        + string(method)
        + i32(seqid)
    )


def field(ttype: int, fid: int, payload: bytes) -> bytes:
    return i8(ttype) + i16(fid) + payload


STOP = i8(TType.STOP)


def struct_of(*fields: bytes) -> bytes:
    return b"".join(fields) + STOP


def list_of(etype: int, size: int, items: bytes = b"") -> bytes:
    return i8(etype) + i32(size) + items


def map_of(ktype: int, vtype: int, size: int, items: bytes = b"") -> bytes:
    return i8(ktype) + i8(vtype) + i32(size) + items


def job_key_bytes(role: str = "bad", env: str = "input", name: str = "wire") -> bytes:
    return struct_of(
        field(TType.STRING, 1, string(role)),
        field(TType.STRING, 2, string(env)),
        field(TType.STRING, 3, string(name)),
    )


def exchange(port: int, payload: bytes) -> bytes | None:
    """Send `payload` on a new connection, half-close it, and read until the server closes
    it. Returns what it sent back (b"" if it closed without answering), or None if the
    connection was still open when the read timed out."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the server closed on us while we were still sending: fine
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
        return received


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Wire:
    """One serving scheduler's API port, a persistent client (the 'others' the server must
    keep serving), and the checks every raw case ends with."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.port = scheduler.api.port
        self.client = make_client(Service, "127.0.0.1", self.port, timeout=10_000)
        self.connections = 0
        self.left_open: list[socket.socket] = []

    def send(self, payload: bytes) -> bytes:
        """Send on a new connection, half-closed: the server must answer or close it."""
        self.connections += 1
        answer = exchange(self.port, payload)
        assert answer is not None, (
            f"the server neither answered nor closed a half-closed connection within "
            f"{READ_TIMEOUT_S} s after {payload[:64]!r}"
        )
        self.check_serving()
        return answer

    def send_and_leave_open(self, payload: bytes) -> None:
        """Send on a new connection and leave it open, without waiting for anything: the
        server may wait for more bytes on it, as long as it serves everyone else."""
        self.connections += 1
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=READ_TIMEOUT_S)
        self.left_open.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        self.check_serving()

    def check_serving(self) -> None:
        """The same persistent connection still gets answers."""
        assert self.client.ping() is None

    def check_fresh(self) -> None:
        """A new connection gets answers too, and the scheduler still leads."""
        self.connections += 1
        fresh = make_client(Service, "127.0.0.1", self.port, timeout=10_000)
        try:
            fresh.ping()
            info = fresh.getSchedulerInfo()
        finally:
            fresh.close()
        assert info.serving is True and info.role == "leader"

    def close(self) -> None:
        self.client.close()
        for sock in self.left_open:
            sock.close()


@pytest.fixture
def wire(scheduler: Any) -> Iterator[Wire]:
    before = rss_mb()
    w = Wire(scheduler)
    try:
        yield w
        w.check_fresh()
        growth = rss_mb() - before
        assert growth < MAX_RSS_GROWTH_MB, f"RSS grew by {growth:.0f} MB"
        assert w.connections <= 400, f"{w.connections} connections: keep this test bounded"
    finally:
        w.close()


def full_request(name: str = "wire") -> Any:
    """A startJobUpdate request with every field set, for cutting into pieces."""
    return t.JobUpdateRequest(
        job=t.JobKey(role="bad", environment="input", name=name),
        taskConfig=t.TaskConfig(
            command=["server", "--port", "8080"],
            shell=False,
            environment={"A": "1", "B": "2"},
            workingDir="/srv",
            healthCheck=t.HealthCheck(kind=1, path="/health", intervalMs=1000),
            labels=dict(FAST_SIM),
            stopGraceMs=1000,
        ),
        instanceCount=3,
        settings=t.JobUpdateSettings(
            strategy=t.UpdateStrategy(kind=2, sizes=[2]),
            heartbeatTimeoutMs=30_000,
            updateOnlyTheseInstances=[t.Range(first=0, last=1)],
        ),
        metadata=[t.Metadata(key="k", value="v")],
    )


# -- raw bytes -----------------------------------------------------------------------------------


def test_random_bytes(wire: Wire) -> None:
    rng = random.Random(SEED)
    for _ in range(64):
        wire.send(rng.randbytes(rng.randint(1, 600)))
    wire.check_fresh()


def test_random_arguments_after_a_valid_header(wire: Wire) -> None:
    """Garbage where a call's arguments should be. Each case must be dealt with at once: a
    case that stalls the server is the unknown-element-type spin (see the test below), and we
    stop at the first one rather than stall the scheduler again and again."""
    rng = random.Random(SEED)
    methods = list(Service.thrift_services)
    for i in range(32):
        payload = header(rng.choice(methods)) + rng.randbytes(rng.randint(0, 300))
        started = time.monotonic()
        wire.send(payload)
        took = time.monotonic() - started
        assert took < STALL_S, f"case {i} stalled the server for {took:.1f} s: {payload[:80].hex()}"
    wire.check_fresh()


def test_truncated_messages(wire: Wire) -> None:
    whole = encode("startJobUpdate", request=full_request(), message="roll", auth=None)
    assert len(whole) > 300
    rng = random.Random(SEED)
    cuts = sorted(set(range(48)) | set(rng.sample(range(48, len(whole)), 60)))
    for cut in cuts:
        assert wire.send(whole[:cut]) == b"", f"answered a call cut at {cut}/{len(whole)} bytes"
    for cut in (5, 30, len(whole) // 2, len(whole) - 1):  # left open: not waited for
        wire.send_and_leave_open(whole[:cut])
    # the whole message still works, so the cuts above were of a valid call
    created = decode(wire.send(encode("createJob", config=new_job("cut"))) or b"")
    assert isinstance(created, Service.createJob_result) and created.invalid is None, created
    wire.check_fresh()


def test_huge_length_prefixes(wire: Wire) -> None:
    def task(*fields: bytes) -> bytes:
        return field(TType.STRUCT, 2, struct_of(*fields))

    def create_job(*task_fields: bytes) -> bytes:
        config = struct_of(
            field(TType.STRUCT, 1, job_key_bytes()),
            task(*task_fields),
            field(TType.I32, 3, i32(1)),
        )
        return header("createJob") + struct_of(field(TType.STRUCT, 1, config))

    cases = {
        "method name of 2e9 bytes": i32(VERSION_1 - 2**32 + 1) + i32(HUGE) + b"ping",
        "string of 2e9 bytes": header("listJobs") + field(TType.STRING, 1, i32(HUGE) + b"abc"),
        "string of -1 bytes": header("listJobs") + field(TType.STRING, 1, i32(-1)) + STOP + STOP,
        "string of -2e9 bytes": header("listJobs") + field(TType.STRING, 1, i32(-HUGE)) + STOP,
        "list<string> of 2e9": create_job(
            field(TType.LIST, 1, list_of(TType.STRING, HUGE, string("a") + string("b")))
        ),
        "list<string> of -1": create_job(field(TType.LIST, 1, list_of(TType.STRING, -1))),
        "list<string> of 2e9 i32s": create_job(
            field(TType.LIST, 1, list_of(TType.I32, HUGE, i32(1) * 4))
        ),
        "map<string,string> of 2e9": create_job(
            field(TType.MAP, 6, map_of(TType.STRING, TType.STRING, HUGE, string("k") * 2))
        ),
        "map of 2e9 wrong pairs": create_job(
            field(TType.MAP, 6, map_of(TType.I64, TType.DOUBLE, HUGE, b"\0" * 32))
        ),
        "set<i32> of 2e9": header("getJobUpdateSummaries")
        + struct_of(field(TType.STRUCT, 1, struct_of(field(TType.SET, 5, list_of(8, HUGE))))),
        "string of 2e9 in a skipped field": header("ping")
        + field(TType.STRING, 9, i32(HUGE) + b"x" * 100),
        "list of 2e9 lists": create_job(
            field(TType.LIST, 1, list_of(TType.LIST, HUGE, list_of(TType.LIST, HUGE)))
        ),
    }
    for name, payload in cases.items():
        answer = wire.send(payload)
        if name == "list<string> of -1":  # read as an empty list: a command is required
            assert decode(answer).invalid.field == "config.taskConfig.command", name
        else:  # its arguments cannot be read: never answered as if they could
            assert answer == b"", f"{name}: answered {answer!r}"
        wire.send_and_leave_open(payload)
    wire.check_fresh()


def test_invalid_field_types(wire: Wire) -> None:
    def answer(payload: bytes) -> Any:
        data = wire.send(payload)
        assert data, f"no answer to {payload!r}"
        return decode(data)

    # A string where an i32 is expected: the field is skipped, so it is missing.
    config = struct_of(
        field(TType.STRUCT, 1, job_key_bytes(name="types")),
        field(TType.STRUCT, 2, struct_of(field(TType.LIST, 1, list_of(11, 1, string("x"))))),
        field(TType.STRING, 3, string("three")),
    )
    result = answer(header("createJob") + struct_of(field(TType.STRUCT, 1, config)))
    assert result.invalid is not None and result.invalid.field == "config.instanceCount"

    # A struct where a string is expected, inside the job key.
    job = struct_of(
        field(TType.STRUCT, 1, STOP),
        field(TType.STRING, 2, string("input")),
        field(TType.STRING, 3, string("types")),
    )
    result = answer(header("getJob") + struct_of(field(TType.STRUCT, 1, job)))
    assert result.invalid is not None and result.invalid.field == "key.role"

    # A string where the update key struct is expected.
    result = answer(header("heartbeatJobUpdate") + struct_of(field(TType.STRING, 1, string("k"))))
    assert result.invalid is not None and result.invalid.field == "key"

    # list<i32> where the command is list<string>: an empty command.
    config = struct_of(
        field(TType.STRUCT, 1, job_key_bytes(name="types")),
        field(TType.STRUCT, 2, struct_of(field(TType.LIST, 1, list_of(8, 2, i32(1) + i32(2))))),
        field(TType.I32, 3, i32(1)),
    )
    result = answer(header("createJob") + struct_of(field(TType.STRUCT, 1, config)))
    assert result.invalid is not None
    assert result.invalid.field.startswith("config.taskConfig.command"), result.invalid

    # map<i32,i64> where labels are map<string,string>, and set<string> for the statuses.
    config = struct_of(
        field(TType.STRUCT, 1, job_key_bytes(name="types")),
        field(
            TType.STRUCT,
            2,
            struct_of(
                field(TType.LIST, 1, list_of(11, 1, string("x"))),
                field(TType.MAP, 6, map_of(8, 10, 1, i32(1) + b"\0" * 8)),
            ),
        ),
        field(TType.I32, 3, i32(-4)),
    )
    result = answer(header("createJob") + struct_of(field(TType.STRUCT, 1, config)))
    assert result.invalid is not None and result.invalid.field == "config.instanceCount"
    query = struct_of(field(TType.SET, 5, list_of(11, 1, string("ROLLING_FORWARD"))))
    result = answer(header("getJobUpdateSummaries") + struct_of(field(TType.STRUCT, 1, query)))
    assert result.success == [] and result.invalid is None

    # a bool where the whole argument struct should be, and an i64 for the role
    assert answer(header("listJobs") + struct_of(field(TType.I64, 1, b"\0" * 8))).success == []
    result = answer(header("getJob") + struct_of(field(TType.BOOL, 1, b"\x01")))
    assert result.invalid is not None and result.invalid.field == "key"

    # nothing was created by any of these
    result = answer(encode("getJob", key=t.JobKey(role="bad", environment="input", name="types")))
    assert result.notFound is not None
    wire.check_fresh()


def test_unknown_method_and_wrong_protocol(wire: Wire) -> None:
    reply = wire.send(header("noSuchMethod") + struct_of(field(TType.STRING, 1, string("x"))))
    assert reply, "no answer to an unknown method"
    error = decode(reply)
    assert isinstance(error, TApplicationException)
    assert error.type == TApplicationException.UNKNOWN_METHOD
    assert isinstance(decode(wire.send(header("") + STOP)), TApplicationException)

    ping = encode("ping")
    wrong = {
        "version 2": i32(struct.unpack("!i", struct.pack("!I", 0x80020001))[0]) + ping[4:],
        "version 0x7f01 (negative size, bad version)": b"\xff\x01" + ping[2:],
        "unversioned (old non-strict form)": string("ping") + i8(1) + i32(1) + STOP,
        "compact protocol": b"\x82\x21\x01\x04ping\x00",
        "framed transport": i32(len(ping)) + ping,
        "http": b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "tls client hello": bytes.fromhex("16030100a5010000a10303") + bytes(160),
        "message type 9": header("ping", mtype=9) + STOP,
        "a reply sent as a call": header("ping", mtype=TMessageType.REPLY) + STOP,
    }
    for payload in wrong.values():
        wire.send(payload)
    # a valid call, then garbage on the same connection: the call is answered, then closed
    reply = wire.send(ping + b"\x00\x00\xff\xff garbage")
    assert reply and isinstance(decode(reply), Service.ping_result)
    wire.check_fresh()


def test_a_container_of_an_unknown_element_type_does_not_stall_the_server(wire: Wire) -> None:
    """30 bytes: a list declaring 2e9 elements of type VOID (1). thriftpy2's Cython skip
    reads nothing for an unknown type, so the server spins through 2e9 no-op skips holding
    the GIL, and every thread of the process (heartbeats, the ZooKeeper session) stalls."""
    payload = header("listJobs") + field(TType.LIST, 1, list_of(1, HUGE)) + STOP
    worst = 0.0
    with socket.create_connection(("127.0.0.1", wire.port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        done = False
        while not done and time.monotonic() < deadline:  # until it answers or closes
            started = time.monotonic()
            wire.check_serving()
            worst = max(worst, time.monotonic() - started)
            done = bool(select.select([sock], [], [], 0)[0])
        assert done, "the server neither answered nor closed the connection in 10 s"
    assert worst < STALL_S, f"one 30-byte message stalled the whole server for {worst:.1f} s"


# -- well-formed, invalid ------------------------------------------------------------------------

LONG = "x" * 2000
I32_MAX = 2**31 - 1


def key(name: str = "base", role: str = "bad", env: str = "input") -> Any:
    return t.JobKey(role=role, environment=env, name=name)


def task_config(**fields: Any) -> Any:
    return t.TaskConfig(**{"command": ["server"], "labels": dict(FAST_SIM), **fields})


def new_job(name: str, count: int = 1, role: str = "bad", **task: Any) -> Any:
    return t.JobConfiguration(
        key=key(name, role=role), taskConfig=task_config(**task), instanceCount=count
    )


def req(count: int = 2, name: str = "base", task: Any = None, **settings: Any) -> Any:
    """An update request for the base job (a new config, so it would otherwise be valid)."""
    return t.JobUpdateRequest(
        job=key(name),
        taskConfig=task or task_config(command=["server", "--v2"]),
        instanceCount=count,
        settings=t.JobUpdateSettings(**settings),
    )


def start(request: Any, message: str = "") -> Callable[[Any], Any]:
    return lambda c: c.startJobUpdate(request, message, None)


def create(job: Any) -> Callable[[Any], Any]:
    return lambda c: c.createJob(job, None)


def summaries(**query: Any) -> Callable[[Any], Any]:
    return lambda c: c.getJobUpdateSummaries(t.JobUpdateQuery(**query), None)


def semantic_cases() -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(what, the field the error must name, the call). Jobs that createJob must refuse are
    named e, n, a, c, s, g, h."""
    unknown = t.JobUpdateKey(job=key(), id="no-such-update")
    strategy = t.UpdateStrategy
    return [
        ("empty role", "config.key.role", create(new_job("e", role=""))),
        ("role with a slash", "config.key.role", create(new_job("s", role="a/b"))),
        ("2,000-char name", "config.key.name", create(new_job(LONG))),
        ("negative count", "config.instanceCount", create(new_job("n", -1))),
        ("absurd count", "config.instanceCount", create(new_job("a", I32_MAX))),
        ("empty command", "config.taskConfig.command", create(new_job("c", command=[]))),
        ("negative grace", "config.taskConfig.stopGraceMs", create(new_job("g", stopGraceMs=-1))),
        (
            "health check kind 9",
            "config.taskConfig.healthCheck.kind",
            create(new_job("h", healthCheck=t.HealthCheck(kind=9))),
        ),
        ("2,000-char message", "message", start(req(), LONG)),
        ("empty job name", "request.job.name", start(req(name=""))),
        ("negative update count", "request.instanceCount", start(req(-3))),
        ("absurd update count", "request.instanceCount", start(req(I32_MAX))),
        (
            "shell with two arguments",
            "request.taskConfig.command",
            start(req(task=task_config(command=["a", "b"], shell=True))),
        ),
        (
            "grace above an hour",
            "request.taskConfig.stopGraceMs",
            start(req(task=task_config(stopGraceMs=I32_MAX))),
        ),
        (
            "strategy kind 42",
            "request.settings.strategy.kind",
            start(req(strategy=strategy(kind=42, sizes=[1]))),
        ),
        (
            "batch size 0",
            "request.settings.strategy.sizes[0]",
            start(req(strategy=strategy(kind=2, sizes=[0]))),
        ),
        (
            "batch size -2^31",
            "request.settings.strategy.sizes[1]",
            start(req(strategy=strategy(kind=3, sizes=[1, -(2**31)]))),
        ),
        (
            "negative heartbeat timeout",
            "request.settings.heartbeatTimeoutMs",
            start(req(heartbeatTimeoutMs=-1)),
        ),
        ("heartbeat resume 99", "request.settings.heartbeatResume", start(req(heartbeatResume=99))),
        (
            "inverted range",
            "request.settings.updateOnlyTheseInstances[0]",
            start(req(updateOnlyTheseInstances=[t.Range(first=5, last=2)])),
        ),
        (
            "negative instance id",
            "request.settings.updateOnlyTheseInstances[0].first",
            start(req(updateOnlyTheseInstances=[t.Range(first=-1, last=2)])),
        ),
        (
            "empty metadata key",
            "request.metadata[0].key",
            start(
                t.JobUpdateRequest(
                    job=key(),
                    taskConfig=task_config(),
                    instanceCount=1,
                    metadata=[t.Metadata(key="", value="v")],
                )
            ),
        ),
        (
            "inverted range in a diff",
            "request.settings.updateOnlyTheseInstances[0]",
            lambda c: c.getJobUpdateDiff(req(updateOnlyTheseInstances=[t.Range(3, 1)]), None),
        ),
        ("status 99", "query.updateStatuses", summaries(updateStatuses={0, 99})),
        ("negative offset", "query.offset", summaries(offset=-5)),
        ("absurd limit", "query.limit", summaries(limit=I32_MAX)),
        (
            "empty update id",
            "key.id",
            lambda c: c.heartbeatJobUpdate(t.JobUpdateKey(job=key(), id=""), None),
        ),
        (
            "2,000-char update id",
            "key.id",
            lambda c: c.getJobUpdateDetails(t.JobUpdateKey(job=key(), id=LONG), None),
        ),
        ("2,000-char pause message", "message", lambda c: c.pauseJobUpdate(unknown, LONG, None)),
        ("2,000-char role", "role", lambda c: c.listJobs(LONG, None)),
        ("empty environment", "key.environment", lambda c: c.getJob(key(env=""), None)),
        ("2,000-char name in a read", "key.name", lambda c: c.getInstances(key(LONG), None)),
        ("empty role in a kill", "key.role", lambda c: c.killJob(key(role=""), "", None)),
    ]


def test_semantically_invalid_calls_get_invalid_request_and_write_nothing(
    scheduler: Any,
) -> None:
    client = make_client(Service, "127.0.0.1", scheduler.api.port, timeout=10_000)
    try:
        client.createJob(new_job("base", 2), None)
        before = client.getJob(key(), None)
        wrong = []
        for what, expected, call in semantic_cases():
            with pytest.raises(t.InvalidRequest) as invalid:
                call(client)
            if invalid.value.field != expected:
                wrong.append(f"{what}: field {invalid.value.field!r}, expected {expected!r}")
            assert invalid.value.message, what

        # nothing was written: the only job is the base job, unchanged, with no update
        assert client.listJobs("", None) == [key()]
        assert client.getJob(key(), None) == before
        assert client.getJobUpdateSummaries(t.JobUpdateQuery(), None) == []
        for name in "enacsgh":
            with pytest.raises(t.NotFound):
                client.getJob(key(name), None)
        assert client.getSchedulerInfo().serving is True
        # The same field under the same name whichever check catches it: a client maps it
        # back to its own input.
        assert not wrong, "InvalidRequest named the wrong field:\n" + "\n".join(wrong)
    finally:
        client.close()
