"""Followers forward mutating calls and heartbeats to the leader over pooled Thrift
connections. A connection that fails is dropped, and the caller gets Unavailable to retry."""

from __future__ import annotations

import queue
import threading
from typing import Any

from thriftpy2.rpc import make_client
from thriftpy2.transport import TTransportException

from api.idl import Service
from updater.errors import Unavailable

POOL_SIZE = 32


class Forwarder:
    def __init__(
        self, timeout_ms: int = 10_000, transport_factory: Any = None, ssl: Any = None
    ) -> None:
        self.timeout_ms = timeout_ms
        self.transport_factory = transport_factory
        self.ssl = ssl  # (cafile, certfile, keyfile) for TLS, or None
        self._pools: dict[str, queue.LifoQueue[Any]] = {}
        self._lock = threading.Lock()

    def _pool(self, address: str) -> queue.LifoQueue[Any]:
        with self._lock:
            pool = self._pools.get(address)
            if pool is None:
                pool = self._pools[address] = queue.LifoQueue(POOL_SIZE)
            return pool

    def _connect(self, address: str) -> Any:
        host, _, port = address.rpartition(":")
        kwargs: dict[str, Any] = {"timeout": self.timeout_ms}
        if self.transport_factory is not None:
            kwargs["trans_factory"] = self.transport_factory
        if self.ssl is not None:
            kwargs["cafile"] = self.ssl
        return make_client(Service, host, int(port), **kwargs)

    def call(self, address: str, method: str, *args: Any) -> Any:
        pool = self._pool(address)
        try:
            client = pool.get_nowait()
        except queue.Empty:
            try:
                client = self._connect(address)
            except (TTransportException, OSError) as e:
                raise Unavailable(f"cannot reach the leader at {address}: {e}") from None
        try:
            result = getattr(client, method)(*args)
        except (TTransportException, OSError, EOFError) as e:
            client.close()
            raise Unavailable(f"lost the connection to the leader at {address}: {e}") from None
        except Exception:
            _put(pool, client)  # a Thrift exception answered by the leader: the link is fine
            raise
        _put(pool, client)
        return result

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            while True:
                try:
                    pool.get_nowait().close()
                except queue.Empty:
                    break


def _put(pool: queue.LifoQueue[Any], client: Any) -> None:
    try:
        pool.put_nowait(client)
    except queue.Full:
        client.close()
