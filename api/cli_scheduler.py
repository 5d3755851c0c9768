"""`pulsegate scheduler run`: config from a TOML file, then the environment, then flags."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from api.server import attach
from scheduler.config import load_config
from scheduler.logs import configure_logging
from scheduler.service import Scheduler
from scheduler.tomlfile import TomlError, load_toml

log = structlog.get_logger(__name__)

# flag → dotted config key
FLAGS = {
    "id": "scheduler.id",
    "zk": "zookeeper.hosts",
    "zk_root": "zookeeper.root",
    "session_timeout": "zookeeper.session_timeout_s",
    "api_port": "api.port",
    "http_port": "http.port",
    "driver": "driver.kind",
    "state_dir": "scheduler.state_dir",
    "log_format": "log.format",
}
DRIVER_NOTICE = (
    "pulsegate: driver: local (instances run as processes on this machine; "
    "--driver sim simulates them)"
)


def register(groups: Any) -> None:
    parser = groups.add_parser("scheduler", help="run a scheduler")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="run a scheduler until SIGTERM")
    run.add_argument("--config", type=Path, help="TOML config file")
    run.add_argument("--id", help="this scheduler's id (default host-pid)")
    run.add_argument("--zk", help='ZooKeeper "host:port,..." or "embedded"')
    run.add_argument("--zk-root", help="root znode (default /pulsegate)")
    run.add_argument("--session-timeout", type=float, help="ZooKeeper session timeout, seconds")
    run.add_argument("--api-port", type=int, help="Thrift API port (0 = any free port)")
    run.add_argument("--http-port", type=int, help="HTTP port for /metrics etc. (0 = any)")
    run.add_argument(
        "--driver",
        choices=("local", "sim"),
        help="how instances run: local processes (default) or sim (simulated, for tests)",
    )
    run.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        help="auto (default): console on a terminal, JSON lines otherwise",
    )
    run.add_argument("--state-dir", help="where local state lives (default ./var)")
    run.set_defaults(handler=run_scheduler)


def run_scheduler(args: argparse.Namespace) -> int:
    flags = {key: getattr(args, name) for name, key in FLAGS.items()}
    try:
        path = args.config or (
            Path(os.environ["PULSEGATE_CONFIG"]) if os.environ.get("PULSEGATE_CONFIG") else None
        )
        config = load_config(path, os.environ, flags)
        driver_defaulted = (
            args.driver is None
            and "PULSEGATE_DRIVER_KIND" not in os.environ
            and (path is None or "kind" not in load_toml(path)[0].get("driver", {}))
        )
    except TomlError as e:
        print(f"pulsegate: {e}", file=sys.stderr)
        return 3
    if driver_defaulted:
        print(DRIVER_NOTICE, file=sys.stderr, flush=True)
    configure_logging(config.log_level, config.log_format)
    scheduler = Scheduler(config)
    attach(scheduler)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        scheduler.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        scheduler.start()
    except Exception as e:  # a port in use, no java...: said on stderr, no traceback
        log.error("scheduler_start_failed", error=str(e))
        scheduler.stop()
        print(f"pulsegate: the scheduler cannot start: {e}", file=sys.stderr)
        return 1
    while not scheduler.wait(1.0):
        pass
    return 0
