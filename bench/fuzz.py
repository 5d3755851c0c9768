"""Fuzz a running scheduler's Thrift API: seeded, bounded, a summary at the end.

Inputs (each on a connection of its own, whose write side is then shut): random bytes,
truncated and oversized messages (and frames, with --transport framed), every method of the
IDL called with plausible and with mutated arguments (wrong field types, unknown fields,
extreme numbers and strings, huge declared lengths), deep nesting, wrong message types and
names, several messages back to back. A second client pings throughout.

An input is answered when the server closes the connection (after replying, or after giving
up on the input); it hangs when that does not happen within --deadline-s while other inputs
are answered. A ping slower than --hang-ms is a hang too. A crash is the scheduler process
dying, or its API refusing connections or pings for --dead-s. Input `i` is generated from
`random.Random(f"{seed}:{i}")`, so `--only i` replays one.

    python bench/fuzz.py [--inputs N] [--seed S] [--transport buffered|framed] [--zk HOSTS]

The last line is the headline:
    fuzz: <N> inputs, <C> crashes, <H> hangs (ping p99 <L> ms), RSS <a> -> <b> MB
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thriftpy2.rpc import make_client  # noqa: E402
from thriftpy2.thrift import TType  # noqa: E402
from thriftpy2.transport import TFramedTransportFactory  # noqa: E402

from api.idl import Service  # noqa: E402

CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
VERSION_1 = 0x80010000
TYPES = (2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15)  # every encodable TType
METHODS: list[str] = list(Service.thrift_services)
INT_RANGES = {TType.BYTE: 8, TType.I16: 16, TType.I32: 32, TType.I64: 64}
NAMES = ["www", "prod", "web", "a", "x" * 64, "bench-1", "", " ", "../..", "/", "\x00"]


# -- encoding (Thrift binary protocol, written by hand so that it can lie) ---------------------


def i8(v: int) -> bytes:
    return struct.pack("!b", ((v + 128) % 256) - 128)


def i16(v: int) -> bytes:
    return struct.pack("!h", ((v + 2**15) % 2**16) - 2**15)


def i32(v: int) -> bytes:
    return struct.pack("!i", ((v + 2**31) % 2**32) - 2**31)


def i64(v: int) -> bytes:
    return struct.pack("!q", ((v + 2**63) % 2**64) - 2**63)


def string(data: bytes) -> bytes:
    return i32(len(data)) + data


def message(name: str, mtype: int, seqid: int, body: bytes) -> bytes:
    return i32(VERSION_1 | mtype) + string(name.encode()) + i32(seqid) + body


# -- values ------------------------------------------------------------------------------------


class Gen:
    """Values for the IDL's types, plausible or hostile, from one seeded Random."""

    def __init__(self, rng: random.Random, hostile: float) -> None:
        self.rng = rng
        self.hostile = hostile  # probability that a value is mutated
        self.big_left = 1  # large strings per input (a list of them would be gigabytes)

    def number(self, bits: int) -> int:
        r = self.rng
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if r.random() < self.hostile:
            return r.choice([lo, hi, -1, 0, 1, lo + 1, hi - 1, r.randint(lo, hi)])
        return r.choice([0, 1, 2, 3, 10, 100, 1000, 60_000])

    def text(self) -> bytes:
        r = self.rng
        if r.random() >= self.hostile:
            return r.choice(NAMES).encode()
        kind = r.randrange(6)
        if kind == 0:
            return bytes(r.randrange(256) for _ in range(r.randrange(64)))  # not UTF-8, likely
        if kind == 1:
            return ("\u202e\U0001f600\ufffd" * r.randrange(1, 50)).encode()
        if kind == 2:
            if self.big_left:
                self.big_left -= 1
                return b"x" * (1_000_000 if r.random() < 0.02 else 65_536)
            return b"x" * r.choice([256, 4096])
        if kind == 3:
            return b"../" * r.randrange(1, 40) + b"etc/passwd"
        if kind == 4:
            return b"%s%n{0}${HOME}\x00\r\n" * r.randrange(1, 5)
        return r.choice(NAMES).encode() * r.randrange(1, 20)

    def value(self, ttype: int, extra: Any, depth: int = 0) -> bytes:
        """Encode one value of the declared type (TType plus thriftpy2's spec extra)."""
        r = self.rng
        if ttype == TType.BOOL:
            return i8(r.choice([0, 1]) if r.random() >= self.hostile else r.randrange(256))
        if ttype in INT_RANGES:
            bits = INT_RANGES[ttype]
            if extra is not None and hasattr(extra, "_VALUES_TO_NAMES") and r.random() > 0.3:
                known = list(extra._VALUES_TO_NAMES)
                return {8: i8, 16: i16, 32: i32, 64: i64}[bits](r.choice(known))
            return {8: i8, 16: i16, 32: i32, 64: i64}[bits](self.number(bits))
        if ttype == TType.DOUBLE:
            special = [float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324]
            v = r.choice(special) if r.random() < self.hostile else r.uniform(0, 1e6)
            return struct.pack("!d", v)
        if ttype == TType.STRING:
            return string(self.text())
        if ttype == TType.STRUCT:
            return self.struct(extra.thrift_spec, depth + 1)
        if ttype in (TType.LIST, TType.SET):
            etype, eextra = extra if isinstance(extra, tuple) else (extra, None)
            n = self.size(depth)
            return (
                i8(etype)
                + i32(n)
                + b"".join(self.value(etype, eextra, depth + 1) for _ in range(n))
            )
        if ttype == TType.MAP:
            (kt, kx), (vt, vx) = (x if isinstance(x, tuple) else (x, None) for x in extra)
            n = self.size(depth)
            pairs = b"".join(
                self.value(kt, kx, depth + 1) + self.value(vt, vx, depth + 1) for _ in range(n)
            )
            return i8(kt) + i8(vt) + i32(n) + pairs
        raise ValueError(f"type {ttype}")

    def size(self, depth: int) -> int:
        r = self.rng
        if depth > 4:
            return 0
        if depth <= 2 and r.random() < self.hostile / 4:  # long lists of small things only
            return r.choice([50, 500, 2000])
        return r.randrange(4)

    def struct(self, spec: dict[int, tuple[Any, ...]], depth: int = 0) -> bytes:
        r = self.rng
        out = []
        for fid, entry in spec.items():
            if r.random() < 0.15:
                continue  # leave it out (required or not)
            ttype, extra = entry[0], (entry[2] if len(entry) == 4 else None)
            if r.random() < self.hostile / 3:  # a wrong type under the right id
                wrong = r.choice([t for t in TYPES if t != ttype])
                out.append(i8(wrong) + i16(fid) + self.junk(wrong, depth))
                continue
            out.append(i8(ttype) + i16(fid) + self.value(ttype, extra, depth))
            if r.random() < self.hostile / 10:  # the same field twice
                out.append(i8(ttype) + i16(fid) + self.value(ttype, extra, depth))
        if r.random() < self.hostile / 3:  # an unknown field, to be skipped
            wrong = r.choice(TYPES)
            out.insert(
                r.randrange(len(out) + 1),
                i8(wrong) + i16(r.choice([99, -1, 32767])) + self.junk(wrong, depth),
            )
        if r.random() < 0.1:
            r.shuffle(out)
        return b"".join(out) + b"\x00"

    def junk(self, ttype: int, depth: int) -> bytes:
        """A value of `ttype` with no schema behind it (what a decoder skips)."""
        r = self.rng
        if ttype == TType.STRUCT:
            if depth > 3:
                return b"\x00"
            return i8(TType.I32) + i16(1) + i32(r.randrange(100)) + b"\x00"
        if ttype in (TType.LIST, TType.SET):
            et = r.choice([TType.I32, TType.STRING, TType.BOOL])
            n = r.randrange(4)
            return i8(et) + i32(n) + b"".join(self.junk(et, depth + 1) for _ in range(n))
        if ttype == TType.MAP:
            return i8(TType.STRING) + i8(TType.I64) + i32(1) + string(b"k") + i64(1)
        return self.value(ttype, None, depth)


# -- inputs ------------------------------------------------------------------------------------


def call(gen: Gen, seqid: int, name: str | None = None) -> bytes:
    name = name or gen.rng.choice(METHODS)
    spec = getattr(Service, f"{name}_args").thrift_spec
    return message(name, CALL, seqid, gen.struct(spec))


def deep(rng: random.Random) -> bytes:
    """Nesting far past any decoder's depth budget: structs in structs, lists in lists."""
    n = rng.choice([100, 1000, 10_000, 100_000])
    if rng.random() < 0.5:
        body = (i8(TType.STRUCT) + i16(99)) * n + b"\x00" * (n + 1)
    else:
        body = i8(TType.LIST) + i16(99) + (i8(TType.LIST) + i32(1)) * n + i8(TType.I32) + i32(0)
        body += b"\x00"
    return message(rng.choice(METHODS), CALL, 1, body)


def oversized(rng: random.Random) -> bytes:
    """Declared lengths far beyond what follows, or a really large payload."""
    name = rng.choice(METHODS)
    kind = rng.randrange(4)
    if kind == 0:  # a huge method-name length
        return i32(VERSION_1 | CALL) + i32(rng.choice([2**31 - 1, 2**30, 10**8])) + b"x" * 16
    if kind == 1:  # a huge string field
        return message(name, CALL, 1, i8(TType.STRING) + i16(1) + i32(2**31 - 1) + b"abc")
    if kind == 2:  # a huge list
        return message(name, CALL, 1, i8(TType.LIST) + i16(1) + i8(TType.I64) + i32(2**31 - 1))
    big = b"y" * (4 << 20 if rng.random() < 0.1 else 1 << 20)  # real, into a skipped field
    return message(name, CALL, 1, i8(TType.STRING) + i16(99) + string(big) + b"\x00")


def wrong_message(gen: Gen) -> bytes:
    r = gen.rng
    name = r.choice([*METHODS, "", "noSuchMethod", "x" * 10_000, "ping\x00", "\xff"])
    body = gen.struct(getattr(Service, f"{name}_args").thrift_spec) if name in METHODS else b"\x00"
    kind = r.randrange(5)
    if kind == 0:  # a reply, an exception, a oneway or an unknown type, sent to a server
        mtype = r.choice([REPLY, EXCEPTION, ONEWAY, 0, 5, 127])
        return message(name, mtype, r.randrange(2**31), body)
    if kind == 1:  # the old unversioned header
        return string(name.encode()) + i8(CALL) + i32(1) + body
    if kind == 2:  # a wrong version
        return (
            i32(r.choice([0x80020000, 0x7FFF0001, -1]) | CALL)
            + string(name.encode())
            + i32(1)
            + body
        )
    if kind == 3:
        return message(name, CALL, r.choice([0, -1, 2**31 - 1]), body)
    return message(name.encode("utf-8", "surrogatepass").decode("latin-1"), CALL, 1, body)


def flipped(gen: Gen) -> bytes:
    data = bytearray(call(gen, 1))
    for _ in range(gen.rng.randrange(1, 8)):
        data[gen.rng.randrange(len(data))] = gen.rng.randrange(256)
    return bytes(data)


CATEGORIES: dict[str, tuple[float, Callable[[Gen], bytes]]] = {
    "random_bytes": (0.12, lambda g: g.rng.randbytes(g.rng.choice([1, 4, 16, 100, 2000]))),
    "valid_call": (0.14, lambda g: call(Gen(g.rng, 0.0), 1)),
    "mutated_call": (0.26, lambda g: call(g, g.rng.randrange(2**31))),
    "flipped_bytes": (0.1, flipped),
    "truncated": (0.1, lambda g: (lambda d: d[: g.rng.randrange(len(d))])(call(g, 1))),
    "oversized": (0.05, lambda g: oversized(g.rng)),
    "deep_nesting": (0.03, lambda g: deep(g.rng)),
    "wrong_message": (0.1, wrong_message),
    "pipelined": (0.1, lambda g: b"".join(call(g, i) for i in range(g.rng.randrange(2, 6)))),
}
_NAMES = list(CATEGORIES)
_WEIGHTS = [CATEGORIES[c][0] for c in _NAMES]


def make_input(seed: int, index: int, framed: bool) -> tuple[str, bytes]:
    rng = random.Random(f"{seed}:{index}")
    category = rng.choices(_NAMES, _WEIGHTS)[0]
    data = CATEGORIES[category][1](Gen(rng, hostile=0.5))
    if framed:
        r = rng.random()
        if r < 0.1:  # a frame that claims more (or less) than it carries
            data = i32(rng.choice([len(data) + 1, len(data) // 2, 2**31 - 1, -1, 0])) + data
        else:
            data = i32(len(data)) + data
    return category, data


# -- running -----------------------------------------------------------------------------------


@dataclass
class Summary:
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    ping_p99_ms: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    by_category: collections.Counter[str] = field(default_factory=collections.Counter)
    replied: collections.Counter[str] = field(default_factory=collections.Counter)
    hung: list[tuple[int, str]] = field(default_factory=list)
    slow_pings: int = 0
    pings: int = 0
    crash_after: int | None = None  # the index of the last input sent before the crash
    seconds: float = 0.0

    def headline(self) -> str:
        return (
            f"fuzz: {self.inputs} inputs, {self.crashes} crashes, {self.hangs} hangs "
            f"(ping p99 {self.ping_p99_ms:.1f} ms), "
            f"RSS {self.rss_start_mb:.0f} -> {self.rss_end_mb:.0f} MB"
        )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def send(address: tuple[str, int], data: bytes, deadline_s: float) -> bool | None:
    """Send one input and wait for the server to close. True: closed after some reply bytes;
    False: closed without a reply; None: not closed within the deadline (a hang). Connection
    refused raises ConnectionRefusedError."""
    end = time.monotonic() + deadline_s
    with socket.create_connection(address, timeout=deadline_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return False  # closed on us mid-send: an answer
        got = False
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got = True


class Pinger(threading.Thread):
    """Pings throughout over one connection (a fresh one after a failure), recording latency."""

    def __init__(
        self, address: tuple[str, int], framed: bool, timeout_s: float, interval_s: float = 0.02
    ) -> None:
        super().__init__(name="fuzz-ping", daemon=True)
        self.address = address
        self.framed = framed
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.latencies: list[float] = []
        self.failing_since: float | None = None
        self.stop_event = threading.Event()

    def _client(self) -> Any:
        kwargs: dict[str, Any] = {"timeout": int(self.timeout_s * 1000)}
        if self.framed:
            kwargs["trans_factory"] = TFramedTransportFactory()
        return make_client(Service, self.address[0], self.address[1], **kwargs)

    def run(self) -> None:
        client = None
        while not self.stop_event.is_set():
            start = time.monotonic()
            try:
                client = client or self._client()
                client.ping()
                self.latencies.append(time.monotonic() - start)
                self.failing_since = None
            except Exception:
                if client is not None:
                    client.close()
                client = None
                self.failing_since = self.failing_since or start
            self.stop_event.wait(self.interval_s)
        if client is not None:
            client.close()


def run(
    address: tuple[str, int],
    pid: int,
    inputs: int,
    seed: int = 1,
    framed: bool = False,
    workers: int = 4,
    deadline_s: float = 10.0,
    hang_ms: float = 2000.0,
    dead_s: float = 10.0,
    only: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """Fuzz the API at `address`, served by process `pid`."""
    summary = Summary(rss_start_mb=rss_mb(pid))
    pinger = Pinger(address, framed, timeout_s=deadline_s)
    pinger.start()
    indexes = iter([only] if only is not None else range(inputs))
    lock = threading.Lock()
    dead = threading.Event()
    started = time.monotonic()

    def alive() -> bool:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return False
        since = pinger.failing_since
        return since is None or time.monotonic() - since < dead_s

    def work() -> None:
        while not dead.is_set():
            with lock:
                index = next(indexes, None)
            if index is None:
                return
            category, data = make_input(seed, index, framed)
            try:
                answer = send(address, data, deadline_s)
            except OSError:
                answer = False
                if not alive():
                    answer = None
            with lock:
                summary.inputs += 1
                summary.by_category[category] += 1
                if answer:
                    summary.replied[category] += 1
                if answer is None and alive():
                    summary.hangs += 1
                    summary.hung.append((index, category))
                if not alive():
                    summary.crash_after = index
                    dead.set()
                if progress and summary.inputs % 10_000 == 0:
                    progress(f"{summary.inputs} inputs, {time.monotonic() - started:.0f} s")

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pinger.stop_event.set()
    pinger.join(timeout=60)
    summary.seconds = time.monotonic() - started
    if not alive():
        summary.crashes = 1
    else:
        summary.rss_end_mb = rss_mb(pid)
    lat = sorted(pinger.latencies)
    summary.pings = len(lat)
    summary.slow_pings = sum(1 for x in lat if x * 1000 > hang_ms)
    summary.hangs += summary.slow_pings
    summary.ping_p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
    return summary


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# -- a scheduler to fuzz -----------------------------------------------------------------------


class SchedulerProcess:
    """`pulsegate scheduler run` with the sim driver, on `zk` (default: an embedded ZooKeeper
    on a free port), in a temporary directory; its JSON log goes to a file there."""

    def __init__(self, zk: str = "embedded", framed: bool = False, root: str = "/fuzz") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pulsegate-fuzz-"))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PULSEGATE_")},
            "PYTHONPATH": str(ROOT),
            "PULSEGATE_ZOOKEEPER_HOSTS": zk,
            "PULSEGATE_ZOOKEEPER_ROOT": root,
            "PULSEGATE_ZOOKEEPER_EMBEDDED_PORT": "0",
            "PULSEGATE_API_PORT": "0",
            "PULSEGATE_HTTP_PORT": "0",
            "PULSEGATE_API_TRANSPORT": "framed" if framed else "buffered",
            "PULSEGATE_DRIVER_KIND": "sim",
            "PULSEGATE_LOG_FORMAT": "json",
            "PULSEGATE_SCHEDULER_STATE_DIR": str(self.dir / "var"),
        }
        self.log = self.dir / "scheduler.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "scheduler", "run"],
                cwd=self.dir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def wait_ready(self, timeout_s: float = 60.0) -> tuple[str, int]:
        """The API address once /ready says 200 (polls: this is a tool, not a test)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the scheduler exited; see {self.log}")
            started = self._started()
            if started is not None:
                try:
                    url = f"http://{started['http']}/ready"
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            host, port = started["api"].rsplit(":", 1)
                            return host, int(port)
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"the scheduler was not ready in {timeout_s} s; see {self.log}")

    def _started(self) -> dict[str, Any] | None:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"scheduler_started"' in line:
                return dict(json.loads(line))
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--transport", choices=("buffered", "framed"), default="buffered")
    parser.add_argument("--zk", default="embedded", help="ZooKeeper hosts (default: embedded)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--deadline-s", type=float, default=10.0, help="per input")
    parser.add_argument("--hang-ms", type=float, default=2000.0, help="a slower ping is a hang")
    parser.add_argument("--only", type=int, help="replay input number ONLY alone")
    args = parser.parse_args()
    framed = args.transport == "framed"
    target = SchedulerProcess(args.zk, framed, root=f"/fuzz-{os.getpid()}")
    try:
        address = target.wait_ready()
        summary = run(
            address,
            target.proc.pid,
            args.inputs,
            args.seed,
            framed,
            workers=args.workers,
            deadline_s=args.deadline_s,
            hang_ms=args.hang_ms,
            only=args.only,
            progress=lambda s: print(s, flush=True),
        )
    finally:
        target.stop()
    print(f"seed {args.seed}, transport {args.transport}, {summary.seconds:.0f} s")
    for category in _NAMES:
        print(
            f"  {category:14} {summary.by_category[category]:7} inputs, "
            f"{summary.replied[category]:7} with reply bytes"
        )
    print(f"  pings: {summary.pings}, slower than {args.hang_ms:.0f} ms: {summary.slow_pings}")
    for index, category in summary.hung[:20]:
        print(f"  hung: input {index} ({category}); replay with --only {index}")
    if summary.crashes:
        print(f"  crashed after input {summary.crash_after}; log: {target.log}")
    print(summary.headline())
    return 1 if summary.crashes or summary.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
