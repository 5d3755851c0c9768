"""The operations endpoint: `/metrics`, `/health`, `/ready` and `/leader` on the standard
library's threading HTTP server, so probes and scrapes never depend on the Thrift API; every
other path goes to the injected `pages` (the web UI, built by the API layer: this module must
not import `api`).

`/health` answers while the process runs; `/ready` and `/leader` ask the injected `status()`
(a dict with at least `ready` and `leader`). A handler never raises: a failing `status()` or
page becomes a 500 with the error as JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger(__name__)

Status = Callable[[], dict[str, Any]]

MAX_BODY_BYTES = 64 * 1024  # an action's JSON body is a reason and little else
DRAIN_BYTES = 1024 * 1024  # a body too large but not huge is read and dropped, so the 413 arrives
# Connections the kernel queues before accept: socketserver's default, 5, drops a burst of
# scrapers and UI users.
BACKLOG = 128


@attrs.frozen
class Request:
    method: str  # GET, HEAD or POST
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""


@attrs.frozen
class Response:
    code: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


class Pages(Protocol):
    def respond(self, request: Request) -> Response:
        """The answer to any request the operations endpoints do not serve; never raises for
        bad input (a 404 or 400 page instead)."""
        ...


class HttpServer:
    """Serves in a daemon thread; `port` is the bound port after `start()` (so 0 works)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        status: Status,
        pages: Pages | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.status = status
        self.pages = pages
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

    def respond(self, request: Request) -> Response:
        path = request.path
        if request.method == "POST":
            return self._page(request)
        if path == "/metrics":
            return Response(200, CONTENT_TYPE_LATEST, generate_latest(self.registry))
        if path == "/health":
            return _json(200, {"ok": True})
        if path == "/ready":
            status = self.status()
            return _json(200 if status.get("ready") else 503, status)
        if path == "/leader":
            leader = self.status().get("leader")
            return _json(503 if leader is None else 200, {"leader": leader})
        return self._page(request)

    def _page(self, request: Request) -> Response:
        if self.pages is not None:
            return self.pages.respond(request)
        return _json(404, {"error": f"no such endpoint: {request.path}"})


def _json(code: int, body: object) -> Response:
    return Response(code, "application/json", json.dumps(body, default=str).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = BACKLOG

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
    timeout = 30  # seconds a client may take to send its request: a stalled one frees its thread

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def _request(self, method: str) -> Request | Response:
        url = urlsplit(self.path)
        body = b""
        if method == "POST":
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                if MAX_BODY_BYTES < length <= DRAIN_BYTES:
                    self.rfile.read(length)  # unread, closing would reset the connection
                return _json(413, {"error": f"a body must be 0 to {MAX_BODY_BYTES} bytes"})
            body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        return Request(method, url.path, parse_qs(url.query), headers, body)

    def _answer(self, method: str) -> None:
        try:
            request = self._request(method)
            if isinstance(request, Request):
                response = self.server.owner.respond(request)
            else:
                response = request
        except Exception as e:  # a handler must never raise: report it as a 500
            log.warning("http_request_failed", path=self.path, exc_info=True)
            response = _json(500, {"error": f"{type(e).__name__}: {e}"})
        try:
            self.send_response(response.code, HTTPStatus(response.code).phrase)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(response.body)
        except OSError:  # the client went away
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: scrapes and probes would flood stderr."""
