"""bench/fuzz.py against a real scheduler process: 10^4 hostile inputs (seeded, so a failure
replays with `python bench/fuzz.py --inputs 10000 --only <i>`), no crash and no hang; and the
fuzzer itself sees a hang when a server never answers."""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fuzz

INPUTS = 10_000


@pytest.fixture
def target(zk_server) -> Iterator[fuzz.SchedulerProcess]:
    proc = fuzz.SchedulerProcess(zk_server.hosts, root=f"/fuzz-{uuid.uuid4().hex[:8]}")
    try:
        yield proc
    finally:
        proc.stop()


def test_ten_thousand_inputs_neither_crash_nor_hang_the_scheduler(target) -> None:
    address = target.wait_ready()
    # generous bounds: the machine is shared, and a hang is an input never answered at all
    summary = fuzz.run(address, target.proc.pid, INPUTS, seed=12, deadline_s=20, hang_ms=5000)
    print(summary.headline())
    assert summary.inputs == INPUTS
    assert (summary.crashes, summary.hangs) == (0, 0), (summary.hung, target.log.read_text())
    assert target.proc.poll() is None
    assert summary.pings > 0
    # every category ran, and well-formed calls got replies (the inputs reached the handler)
    assert set(summary.by_category) == set(fuzz.CATEGORIES)
    assert summary.replied["valid_call"] == summary.by_category["valid_call"]


def test_the_fuzzer_counts_an_input_never_answered_as_a_hang() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept_and_hold() -> None:  # a server that takes connections and never answers
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_hold, daemon=True).start()
    try:
        address = ("127.0.0.1", listener.getsockname()[1])
        summary = fuzz.run(address, os.getpid(), 3, workers=1, deadline_s=0.5, dead_s=600)
    finally:
        listener.close()
        for sock in held:
            sock.close()
    assert summary.inputs == 3
    assert summary.hangs == 3 and summary.crashes == 0
    assert [category for _, category in summary.hung] == [
        fuzz.make_input(1, i, False)[0] for i in range(3)
    ]
