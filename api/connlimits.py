"""Caps on the API's open connections, overall and per peer address: each connection holds a
thread (about 85 KB idle), so without a cap one peer opening connections in a loop takes memory
and threads from everyone, the monitors whose heartbeats keep updates alive included.

A connection over a cap is closed right after accept, before anything is read; the reason is
logged (at most once a second per reason, so a flood does not flood the log) and counted. It is
not answered with a TApplicationException: that needs the peer's request (the reply carries its
method name and sequence id), and reading it means holding a thread for a peer that is over its
cap, which is what the cap is there to prevent; a closed connection is what clients already
retry on."""

from __future__ import annotations

import threading
import time

import structlog

from scheduler.metrics import Metrics

log = structlog.get_logger(__name__)

LOG_EVERY_S = 1.0


class ConnectionGate:
    """Counts open connections by peer; `admit` says whether one more may be served, `release`
    gives its place back. Thread-safe (the accept thread admits, connection threads release)."""

    def __init__(self, max_open: int, max_per_peer: int, metrics: Metrics) -> None:
        self.max_open = max_open
        self.max_per_peer = max_per_peer
        self.metrics = metrics
        self.open = 0
        self._by_peer: dict[str, int] = {}
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}
        self._refused: dict[str, int] = {}
        metrics.api_connections_open.set(0)

    def admit(self, peer: str) -> bool:
        with self._lock:
            reason = ""
            if self.open >= self.max_open:
                reason = "max_connections"
            elif self._by_peer.get(peer, 0) >= self.max_per_peer:
                reason = "max_connections_per_peer"
            if not reason:
                self.open += 1
                self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
                self.metrics.api_connections_open.set(self.open)
                return True
            self._refused[reason] = self._refused.get(reason, 0) + 1
            now = time.monotonic()
            due = now - self._logged.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S
            if due:
                self._logged[reason] = now
                refused, self._refused[reason] = self._refused[reason], 0
            open_now, peer_now = self.open, self._by_peer.get(peer, 0)
        self.metrics.api_connection_refused(reason)
        if due:
            log.warning(
                "api_connection_refused",
                reason=reason,
                peer=peer,
                open=open_now,
                open_from_peer=peer_now,
                limit=self.max_open if reason == "max_connections" else self.max_per_peer,
                key=f"api.{reason}",
                refused_since_last_log=refused,
            )
        return False

    def release(self, peer: str) -> None:
        with self._lock:
            self.open -= 1
            left = self._by_peer[peer] - 1
            if left:
                self._by_peer[peer] = left
            else:
                del self._by_peer[peer]
            self.metrics.api_connections_open.set(self.open)
