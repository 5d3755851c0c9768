"""The scheduler process: wires ZooKeeper (embedded or external), leadership, storage, the
driver, the leader loop and the HTTP endpoints together, and takes them apart on stop.

Start-up never waits for ZooKeeper: the client connects in the background and keeps retrying
(backoff capped at one second, or a restarted ZooKeeper's sessions expire before we return),
and the node reports not-ready meanwhile; it is also not ready while its own API cannot answer
it (`selfprobe.py`). A port that is taken (API, HTTP, embedded ZooKeeper) refuses the start,
naming the setting to change. Stop releases leadership at once and kills no instance."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import structlog
from kazoo.client import KazooClient
from prometheus_client import CollectorRegistry

from scheduler.clock import Clock, SystemClock
from scheduler.config import Config
from scheduler.drivers.local import LocalDriver
from scheduler.drivers.records import InstanceRecords
from scheduler.drivers.simrt import RealtimeSimDriver
from scheduler.election import Leadership
from scheduler.exposure import check_exposure
from scheduler.http import HttpServer, Pages
from scheduler.leader import LeaderLoop
from scheduler.metrics import Metrics
from scheduler.paths import Paths
from scheduler.ports import PortInUse, is_address_in_use, is_port_free
from scheduler.selfprobe import PROBE_INTERVAL_S, SelfProbe
from scheduler.zkserver import EmbeddedZooKeeper, ZooKeeperStartError
from scheduler.zkstore import ZooKeeperStorage
from updater.driver import Driver

log = structlog.get_logger(__name__)

CONNECTION_RETRY = {"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0}


def make_client(hosts: str, session_timeout_s: float) -> KazooClient:
    return KazooClient(
        hosts=hosts,
        timeout=session_timeout_s,
        connection_retry=dict(CONNECTION_RETRY),
        command_retry={"max_tries": 0},
    )


def make_driver(config: Config, clock: Clock, store: ZooKeeperStorage) -> Driver:
    if config.driver == "sim":
        return RealtimeSimDriver(clock, config.sim_action_log, config.scheduler_id)
    if config.driver == "local":
        return LocalDriver(
            clock,
            base_dir=Path.cwd(),
            log_dir=Path(config.state_dir).resolve() / "logs",
            records=InstanceRecords(store, socket.gethostname()),
        )
    raise ValueError(f"unknown driver {config.driver!r}")


class Scheduler:
    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        driver: Driver | None = None,
        registry: CollectorRegistry | None = None,
        api_probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.paths = Paths(config.zk_root)
        self.embedded: EmbeddedZooKeeper | None = None
        self._driver_arg = driver
        self.driver: Driver | None = None
        self.client: KazooClient | None = None
        self.leadership: Leadership | None = None
        self.store: ZooKeeperStorage | None = None
        self.loop: LeaderLoop | None = None
        self.http: HttpServer | None = None
        self.api: Any = None  # the Thrift server, attached by the API layer
        self.pages: Pages | None = None  # the web UI on the HTTP port, attached by the API layer
        self.api_address = ""
        self.api_probe_interval_s = api_probe_interval_s
        self.probe: SelfProbe | None = None
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Raises PortInUse when a port is taken and UnsafeExposure when the addresses would
        expose the API without auth; `stop()` then undoes what had started."""
        config = self.config
        check_exposure(config, with_api=self.api is not None)
        self._check_ports()
        hosts = config.zk_hosts
        if config.zk_embedded:
            self.embedded = self._start_embedded()
            hosts = self.embedded.hosts
        self.client = make_client(hosts, config.zk_session_timeout_s)
        self.client.add_listener(self._zk_state)
        self.client.start_async()
        self.http = HttpServer(
            config.http_host, config.http_port, self.registry, self.status, self.pages
        )
        try:
            self.http.start()
        except OSError as e:
            if is_address_in_use(e):
                raise PortInUse(
                    "the HTTP", config.http_host, config.http_port, "http.port"
                ) from None
            raise
        if self.api is not None:
            self.api.start()
        self.api_address = self._advertised_api()
        identity = {
            "id": config.scheduler_id,
            "api": self.api_address,
            "http": f"{config.http_host}:{self.http.port}",
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        self.leadership = Leadership(
            self.client,
            self.paths,
            identity,
            on_change=self._leadership_changed,
            session_file=config.debug_session_file,
            timeout_s=min(10.0, config.zk_session_timeout_s),
        )
        self.store = ZooKeeperStorage(
            self.client,
            self.paths,
            fence=self.leadership,
            writer=config.scheduler_id,
            timeout_s=min(10.0, config.zk_session_timeout_s),
        )
        self.driver = self._driver_arg or make_driver(config, self.clock, self.store)
        self.loop = LeaderLoop(
            self.store,
            self.leadership,
            self.driver,
            self.clock,
            self.metrics,
            max_instances=config.max_instances,
            history_keep=config.history_keep,
            history_max_age_ms=config.history_max_age_ms,
            prune_interval_ms=int(config.prune_interval_s * 1000),
            on_serving=self._serving,
        )
        self.loop.start()
        self.leadership.start()
        if self.api is not None:
            self.probe = SelfProbe(self.api.probe, self.api_probe_interval_s)
            self.probe.start()
        log.info(
            "scheduler_started",
            id=config.scheduler_id,
            api=self.api_address,
            http=identity["http"],
            zookeeper=hosts,
            root=config.zk_root,
            driver=config.driver,
        )

    def _check_ports(self) -> None:
        """Refuse a taken port before anything starts (the servers check again as they bind)."""
        config = self.config
        wanted = [("the HTTP", config.http_host, config.http_port, "http.port")]
        if self.api is not None:
            wanted.append(("the Thrift API", config.api_host, config.api_port, "api.port"))
        if config.zk_embedded:
            port = config.zk_embedded_port
            wanted.append(
                ("the embedded ZooKeeper's", "127.0.0.1", port, "zookeeper.embedded_port")
            )
        for what, host, port, key in wanted:
            if port and not is_port_free(host, port):
                raise PortInUse(what, host, port, key)

    def _start_embedded(self) -> EmbeddedZooKeeper:
        """Port 0 takes the port of the data dir's last run if free, else any; the connection
        string is left in <data dir>/hosts for clients."""
        config = self.config
        data_dir = Path(config.resolved_embedded_data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        embedded = EmbeddedZooKeeper(
            data_dir, port=config.zk_embedded_port or None, die_with_parent=True
        )
        try:
            embedded.start()
        except ZooKeeperStartError as e:
            if e.reason == "port_in_use":
                raise PortInUse(
                    "the embedded ZooKeeper's",
                    embedded.host,
                    embedded.port,
                    "zookeeper.embedded_port",
                ) from None
            raise
        log.info(
            "embedded_zookeeper_started",
            hosts=embedded.hosts,
            data_dir=str(data_dir),
            hosts_file=str(embedded.hosts_path),
        )
        return embedded

    def stop(self) -> None:
        """Release leadership first (a follower takes over at once), then stop serving. Running
        instances are left alone."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.leadership is not None:
            self.leadership.stop()
        if self.loop is not None:
            self.loop.stop()
        if self.probe is not None:
            self.probe.stop()
        if self.api is not None:
            self.api.stop()
        if self.http is not None:
            self.http.stop()
        stop_driver = getattr(self.driver, "stop", None)
        if callable(stop_driver):
            stop_driver()
        if self.client is not None:
            self.client.stop()
            self.client.close()
        if self.embedded is not None:
            self.embedded.stop()
        log.info("scheduler_stopped", id=self.config.scheduler_id)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # -- state -----------------------------------------------------------------------------------

    def _advertised_api(self) -> str:
        if self.config.api_advertise:
            return self.config.api_advertise
        port = getattr(self.api, "port", self.config.api_port)
        return f"{self.config.api_host}:{port}"

    def _zk_state(self, state: str) -> None:
        # kazoo's connection thread: flags and metrics only.
        self.metrics.set_zk_state(str(state).lower())
        if self.loop is not None:
            self.loop.wake()

    def _leadership_changed(self) -> None:
        if self.loop is not None:
            self.loop.leadership_changed()

    def _serving(self) -> None:
        assert self.leadership is not None and self.loop is not None
        self.leadership.publish_serving({"since": self.loop.takeover_ms})

    def status(self) -> dict[str, Any]:
        """For /ready and /leader. Ready needs ZooKeeper, a serving leader (this node or
        another) and, with an API, its last self-probe answered."""
        connected = bool(self.client is not None and self.client.connected)
        leader = self.leadership.leader_identity() if self.leadership and connected else None
        serving = bool(self.loop is not None and self.loop.is_serving)
        role = self.leadership.role.value if self.leadership else "starting"
        api = self.probe.verdict() if self.probe is not None else None
        api_ok = self.api is None or (api is not None and api.ok)
        return {
            "id": self.config.scheduler_id,
            "role": role,
            "serving": serving,
            "zookeeper": "connected" if connected else "disconnected",
            "api": "none" if self.api is None else (api.describe() if api else "not started"),
            "ready": api_ok
            and connected
            and (serving or (leader is not None and role == "follower")),
            "leader": leader,
            "active_updates": len(self.loop.runs) if self.loop and serving else None,
        }
