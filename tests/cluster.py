"""In-process schedulers with their Thrift API, on the test run's ZooKeeper, for API and CLI
tests. Each gets its own root znode and state directory."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from api.client import PulsegateClient
from api.server import attach
from scheduler.config import load_config
from scheduler.logs import configure_logging
from scheduler.service import Scheduler

from waiting import wait_until

# Instances under the sim driver start and become healthy in 50 ms.
FAST_SIM = {"sim.start_ms": "50", "sim.healthy_after_ms": "50", "sim.kill_ms": "20"}


def start_scheduler(
    hosts: str, root: str, state_dir: Path, name: str = "", **flags: Any
) -> Scheduler:
    values: dict[str, object] = {
        "scheduler.id": name or f"s-{uuid.uuid4().hex[:6]}",
        "scheduler.state_dir": str(state_dir),
        "zookeeper.hosts": hosts,
        "zookeeper.root": root,
        "zookeeper.session_timeout_s": 4.0,
        "api.port": 0,
        "http.port": 0,
        "driver.kind": "sim",
        "log.format": "console",
        "log.level": "warning",
    }
    values.update(flags)
    config = load_config(None, {}, values)
    configure_logging(config.log_level, config.log_format, stream=sys.stderr)
    scheduler = Scheduler(config)
    attach(scheduler)
    scheduler.start()
    return scheduler


def wait_serving(scheduler: Scheduler, timeout: float = 20.0) -> Scheduler:
    wait_until(
        lambda: scheduler.loop is not None and scheduler.loop.is_serving,
        timeout=timeout,
        message=f"{scheduler.config.scheduler_id} is not serving",
    )
    return scheduler


def api_address(scheduler: Scheduler) -> str:
    return f"127.0.0.1:{scheduler.api.port}"


def client_for(scheduler: Scheduler, **kwargs: Any) -> PulsegateClient:
    kwargs.setdefault("retry_for_s", 10)
    return PulsegateClient(api_address(scheduler), **kwargs)
