#!/usr/bin/env python3
"""The instance program of bench/chaos.py: serves /health on $PORT and appends its own start and
stop, with timestamps, to $CHAOS_LOG, so the fault suite's checker learns from the instances
themselves (not from any scheduler) what ran when. Standard library only, quick to start.

The start time is the process's own exec time from /proc (start ticks since boot plus the boot
time), not the moment Python got round to logging, so a gate check sees when the driver acted."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def exec_time() -> float:
    """When this process was exec'd, in wall time (boot time from uptime, to 10 ms)."""
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def note(event: str, at: float) -> None:
    line = {
        "event": event,
        "t": at,
        "id": int(os.environ.get("PULSEGATE_INSTANCE_ID", "-1")),
        "version": os.environ.get("VERSION", ""),
        "pid": os.getpid(),
        "port": int(os.environ["PORT"]),
    }
    with open(os.environ["CHAOS_LOG"], "a") as f:  # one short append: lines do not interleave
        f.write(json.dumps(line) + "\n")


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def main() -> int:
    note("start", exec_time())
    try:
        server = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health)
    except OSError:  # its port is held: another copy of this instance runs
        note("port_in_use", time.time())
        return 1

    def stop(*_: object) -> None:
        note("stop", time.time())
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
