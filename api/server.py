"""The Thrift server: one thread per connection (monitors keep theirs open; 2,000 idle
connections cost about 170 MB), binary protocol, buffered or framed transport, optional TLS.

Connections idle longer than `IDLE_TIMEOUT_S` are closed (clients reconnect on their own), which
also bounds what a peer that sends a huge length prefix and then nothing can hold. Garbage on
the wire closes that one connection, quietly, and is counted. Open connections are capped,
overall and per peer address (`api/connlimits.py`).

The listening socket is bound without SO_REUSEPORT (thriftpy2 sets it), so a second scheduler
on a port in use is refused instead of sharing the port. `probe()` calls the server through a
connection of its own, as a client would: the scheduler's readiness depends on it."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any

import structlog
from thriftpy2.rpc import make_client
from thriftpy2.server import TThreadedServer
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor, TType
from thriftpy2.transport import TServerSocket, TTransportException

from api import ui
from api.auth import Authenticator
from api.connlimits import ConnectionGate
from api.forward import Forwarder
from api.handler import Handler
from api.idl import Service
from api.wire import server_codec, transport_factory
from scheduler.ports import PortInUse, is_address_in_use

if TYPE_CHECKING:
    from scheduler.service import Scheduler

log = structlog.get_logger(__name__)

IDLE_TIMEOUT_S = 300.0
BACKLOG = 1024
PROBE_TIMEOUT_S = 2.0
HANDSHAKE_TIMEOUT_S = 10.0


class CallsOnly(TProcessor):
    """Runs only messages typed CALL. A REPLY, EXCEPTION or ONEWAY (the service declares no
    oneway method) is answered with INVALID_MESSAGE_TYPE and never executed: a peer that
    echoes our replies back, or a confused client, cannot make a call happen."""

    def process_in(self, iprot: Any) -> tuple[str, int, Any, Any]:
        api, kind, seqid = iprot.read_message_begin()
        if kind != TMessageType.CALL:
            iprot.skip(TType.STRUCT)
            iprot.read_message_end()
            refused = TApplicationException(
                TApplicationException.INVALID_MESSAGE_TYPE,
                f"message type {kind} is not a call; send {api} as a CALL",
            )
            return api, seqid, refused, None
        if api not in self._service.thrift_services:
            iprot.skip(TType.STRUCT)
            iprot.read_message_end()
            return api, seqid, TApplicationException(TApplicationException.UNKNOWN_METHOD), None
        args = getattr(self._service, api + "_args")()
        args.read(iprot)
        iprot.read_message_end()
        result = getattr(self._service, api + "_result")()
        names = [item[1] for item in args.thrift_spec.values()]  # the IDL's argument order

        def call() -> Any:
            return getattr(self._handler, api)(*(args.__dict__[k] for k in names))

        return api, seqid, result, call


class _Server(TThreadedServer):
    def __init__(
        self,
        *args: Any,
        on_bad_input: Any,
        gate: ConnectionGate,
        tls: ssl.SSLContext | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_bad_input = on_bad_input
        self.gate = gate
        self.tls = tls

    def serve(self) -> None:
        self.trans.listen()
        while not self.closed:
            try:
                client = self.trans.accept()
            except OSError:
                if self.closed:
                    return  # the listening socket was closed by stop()
                continue
            peer = _peer(client)
            if not self.gate.admit(peer):
                client.close()  # over a cap: closed before reading (api/connlimits.py says why)
                continue
            thread = threading.Thread(target=self._serve_one, args=(client, peer), daemon=True)
            thread.start()

    def _serve_one(self, client: Any, peer: str) -> None:
        try:
            if self.tls is not None and not _handshake(client, self.tls):
                return
            self.handle(client)
        finally:
            self.gate.release(peer)

    def handle(self, client: Any) -> None:
        itrans = self.itrans_factory.get_transport(client)
        otrans = self.otrans_factory.get_transport(client)
        iprot = self.iprot_factory.get_protocol(itrans)
        oprot = self.oprot_factory.get_protocol(otrans)
        try:
            while True:
                self.processor.process(iprot, oprot)
        except (TTransportException, OSError, EOFError):
            pass  # the peer went away or idled out
        except Exception as e:  # malformed input: drop this connection only
            self.on_bad_input(e)
        finally:
            itrans.close()
            otrans.close()


def _handshake(client: Any, context: ssl.SSLContext) -> bool:
    """TLS on an accepted connection, in its own thread (thriftpy2's TSSLServerSocket does it in
    the accept loop, where one silent peer stops every new connection), within
    HANDSHAKE_TIMEOUT_S; then the idle timeout applies again."""
    raw = client.sock
    idle = raw.gettimeout()
    try:
        raw.settimeout(HANDSHAKE_TIMEOUT_S)
        client.sock = context.wrap_socket(raw, server_side=True)
        client.sock.settimeout(idle)
    except (OSError, ValueError):  # ssl.SSLError and timeouts are OSErrors
        raw.close()
        return False
    return True


def _peer(client: Any) -> str:
    try:
        return str(client.sock.getpeername()[0])
    except (OSError, AttributeError):
        return "unknown"  # already gone; its thread sees the error and ends


class ApiServer:
    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        transport: str = "buffered",
        tls_cert: str = "",
        tls_key: str = "",
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        force_pure_protocol: bool = False,
        max_connections: int = 2000,
        max_connections_per_peer: int = 200,
    ) -> None:
        """`force_pure_protocol` takes the fallback used when thriftpy2's compiled decoder is
        unguarded (tests exercise it without uninstalling anything)."""
        self.handler = handler
        self.host = host
        self.port = port
        self.transport = transport
        self.tls = (tls_cert, tls_key) if tls_cert else None
        self.idle_timeout_s = idle_timeout_s
        self.force_pure_protocol = force_pure_protocol
        self.bad_input = 0
        self.gate = ConnectionGate(max_connections, max_connections_per_peer, handler.metrics)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _socket(self) -> TServerSocket:
        """The server socket, already listening (so the port is known)."""
        timeout_ms = int(self.idle_timeout_s * 1000)
        # plain even with TLS: the handshake happens in each connection's thread (_handshake)
        server = TServerSocket(self.host, self.port, client_timeout=timeout_ms, backlog=BACKLOG)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # but never SO_REUSEPORT
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            if is_address_in_use(e):
                raise PortInUse("the Thrift API", self.host, self.port, "api.port") from None
            raise
        sock.listen(BACKLOG)
        server.sock = sock
        server.listen = lambda: None  # type: ignore[method-assign]  # listening already
        return server

    def _bad_input(self, error: Exception) -> None:
        self.bad_input += 1
        self.handler.metrics.api_request("invalid_frame", type(error).__name__)
        log.debug("api_bad_input", error=f"{type(error).__name__}: {error}")

    def start(self) -> None:
        context = None
        if self.tls is not None:  # before binding: a bad certificate leaves no socket behind
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile=self.tls[0], keyfile=self.tls[1])
        sock = self._socket()
        assert sock.sock is not None  # listening
        self.port = sock.sock.getsockname()[1]
        protocol, transport = server_codec(self.transport, self.force_pure_protocol)
        self._server = _Server(
            CallsOnly(Service, self.handler),
            sock,
            iprot_factory=protocol,
            itrans_factory=transport,
            daemon=True,
            on_bad_input=self._bad_input,
            gate=self.gate,
            tls=context,
        )
        self._thread = threading.Thread(target=self._server.serve, name="api-accept", daemon=True)
        self._thread.start()
        log.info(
            "api_server_started",
            host=self.host,
            port=self.port,
            transport=self.transport,
            tls=self.tls is not None,
        )

    def probe(self) -> None:
        """Call getSchedulerInfo (a reply with strings) on our own port over a new connection;
        raises if the server cannot answer. TLS is not verified: the peer is ourselves."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        context = None
        if self.tls is not None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = make_client(
            Service,
            host,
            self.port,
            trans_factory=transport_factory(self.transport),
            timeout=int(PROBE_TIMEOUT_S * 1000),
            ssl_context=context,
            socket_family=socket.AF_INET6 if ":" in host else socket.AF_INET,
        )
        try:
            client.getSchedulerInfo()
        finally:
            client.close()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        sock = self._server.trans.sock
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.handler.forwarder.close()
        log.info("api_server_stopped", port=self.port)


def attach(scheduler: Scheduler, force_pure_protocol: bool = False) -> ApiServer:
    """Give a scheduler its Thrift API (started, probed and stopped with it) and the web UI on its
    HTTP port, which calls the same handler."""
    config = scheduler.config
    auth = Authenticator(config.auth_enabled, config.auth_principals, config.reads_require_auth)
    forwarder = Forwarder(
        transport_factory=transport_factory(config.api_transport),
        ssl=config.api_tls_cert or None,
    )
    server = ApiServer(
        Handler(scheduler, auth, forwarder),
        config.api_host,
        config.api_port,
        config.api_transport,
        config.api_tls_cert,
        config.api_tls_key,
        force_pure_protocol=force_pure_protocol,
        max_connections=config.api_max_connections,
        max_connections_per_peer=config.api_max_connections_per_peer,
    )
    scheduler.api = server
    ui.attach(scheduler, server.handler)
    return server
