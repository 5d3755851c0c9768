"""The ports a scheduler listens on, and the refusal when one is taken: a second scheduler on a
port already in use must not start (the kernel would split connections between the two), and the
operator is told which port and which setting to change."""

from __future__ import annotations

import errno
import socket

from updater.errors import PulsegateError

# config key -> the `pulsegate scheduler run` flag that sets it (keys without a flag have none)
FLAGS = {"api.port": "--api-port", "http.port": "--http-port"}


class PortInUse(PulsegateError):
    """A port the scheduler should listen on is taken. The message names the setting."""

    reason = "port_in_use"

    def __init__(self, what: str, host: str, port: int, key: str) -> None:
        env = "PULSEGATE_" + key.upper().replace(".", "_")
        flag = FLAGS.get(key)
        where = f"{flag}, {key} or {env}" if flag else f"{key} or {env}"
        super().__init__(
            f"{what} port {port} on {host} is already in use (another scheduler?); "
            f"choose another port with {where} (0 picks a free one)"
        )
        self.host, self.port, self.key = host, port, key


def is_address_in_use(error: OSError) -> bool:
    return error.errno == errno.EADDRINUSE


def is_port_free(host: str, port: int) -> bool:
    """Could a server bind `host:port` now? Binds the way servers do (SO_REUSEADDR, so a port
    whose old connections linger in TIME_WAIT counts as free) and lets go at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if is_address_in_use(e):
                return False
            raise
    return True
