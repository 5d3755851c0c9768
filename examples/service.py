#!/usr/bin/env python3
"""A tiny HTTP service to roll out: answers /health and /version. Its behaviour comes from the
environment, so that job files can describe a good and a bad release:

    PORT          port to listen on (127.0.0.1); pulsegate's local driver sets it
    VERSION       what /version answers (default "1")
    START_DELAY   seconds to wait before listening, like a slow start (default 0)
    HEALTHY       "yes" (default), "no" (/health answers 503), or "after:N" (503 for N seconds)
    CRASH_AFTER   if set, exit with status 3 after this many seconds

Standard library only. Stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()


def healthy() -> bool:
    setting = os.environ.get("HEALTHY", "yes")
    if setting.startswith("after:"):
        return time.monotonic() - STARTED >= float(setting.split(":", 1)[1])
    return setting not in ("no", "0", "false")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            ok = healthy()
            self.reply(200 if ok else 503, {"healthy": ok})
        elif self.path == "/version":
            self.reply(200, {"version": os.environ.get("VERSION", "1"), "pid": os.getpid()})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass  # keep the instance log for what matters


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    time.sleep(float(os.environ.get("START_DELAY", "0")))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    crash = os.environ.get("CRASH_AFTER")
    if crash:
        threading.Timer(float(crash), lambda: os._exit(3)).start()
    version = os.environ.get("VERSION", "1")
    print(f"service version {version} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    print("service stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
