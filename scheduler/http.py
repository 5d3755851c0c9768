"""The operations endpoint: `/metrics`, `/health`, `/ready` and `/leader` on the standard
library's threading HTTP server, so probes and scrapes never depend on the Thrift API.

`/health` answers while the process runs; `/ready` and `/leader` ask the injected `status()`
(a dict with at least `ready` and `leader`). A handler never raises: a failing `status()`
becomes a 500 with the error as JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger(__name__)

Status = Callable[[], dict[str, Any]]


class HttpServer:
    """Serves in a daemon thread; `port` is the bound port after `start()` (so 0 works)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, status: Status) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.status = status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            # A short poll interval keeps stop() quick; serve_forever checks it between polls.
            target=self._server.serve_forever,
            args=(0.05,),
            name="pulsegate-http",
            daemon=True,
        )
        self._thread.start()
        log.info("http_server_started", host=self.host, port=self.port)

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice or before start."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        log.info("http_server_stopped", port=self.port)

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status code, content type, body) for a GET of `path`."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/health":
            return _json(200, {"ok": True})
        if path == "/ready":
            status = self.status()
            return _json(200 if status.get("ready") else 503, status)
        if path == "/leader":
            leader = self.status().get("leader")
            return _json(503 if leader is None else 200, {"leader": leader})
        return _json(404, {"error": f"no such endpoint: {path}"})


def _json(code: int, body: object) -> tuple[int, str, bytes]:
    return code, "application/json", json.dumps(body, default=str).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], owner: HttpServer
    ) -> None:
        super().__init__(address, handler)
        self.owner = owner

    def handle_error(self, request: object, client_address: object) -> None:
        # Only socket-level failures get here (the handler catches its own); don't print them.
        log.debug("http_connection_failed", client=str(client_address), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # HTTP/1.0: one request per connection, so stop() leaves no idle threads

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        try:
            code, content_type, body = self.server.owner.respond(urlsplit(self.path).path)
        except Exception as e:  # a handler must never raise: report it as a 500
            log.warning("http_request_failed", path=self.path, exc_info=True)
            code, content_type, body = _json(500, {"error": f"{type(e).__name__}: {e}"})
        try:
            self.send_response(code, HTTPStatus(code).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except OSError:  # the client went away
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: scrapes and probes would flood stderr."""
