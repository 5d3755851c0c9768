"""The operations HTTP server against a real socket on 127.0.0.1, the metrics it exports, and
the logging set-up."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any
from urllib.error import HTTPError

import pytest
import structlog
from prometheus_client import CollectorRegistry

from scheduler.http import HttpServer
from scheduler.logs import configure_logging
from scheduler.metrics import Metrics

# No proxies: the requests go to our own server on the loopback address.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StatusSource:
    """A status() the test can change or make fail."""

    def __init__(self) -> None:
        self.value: dict[str, Any] = {"ready": False, "leader": None}
        self.error: Exception | None = None

    def __call__(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def status() -> StatusSource:
    return StatusSource()


@pytest.fixture
def server(registry: CollectorRegistry, status: StatusSource) -> Iterator[HttpServer]:
    server = HttpServer("127.0.0.1", 0, registry, status)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fetch(server: HttpServer, path: str, method: str = "GET") -> tuple[int, bytes, Message]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except HTTPError as e:
        return e.code, e.read(), e.headers


def fetch_json(server: HttpServer, path: str) -> tuple[int, Any]:
    code, body, headers = fetch(server, path)
    assert headers["Content-Type"] == "application/json"
    return code, json.loads(body)


def test_port_zero_binds_a_free_port(server: HttpServer) -> None:
    assert server.port > 0


def test_health_is_ok_while_running(server: HttpServer) -> None:
    assert fetch_json(server, "/health") == (200, {"ok": True})


def test_ready_follows_status(server: HttpServer, status: StatusSource) -> None:
    assert fetch_json(server, "/ready") == (503, {"ready": False, "leader": None})
    status.value = {"ready": True, "leader": "node-1:7070", "zk": "connected"}
    assert fetch_json(server, "/ready") == (200, status.value)
    assert fetch_json(server, "/ready?verbose=1")[0] == 200


def test_leader_is_503_until_known(server: HttpServer, status: StatusSource) -> None:
    assert fetch_json(server, "/leader") == (503, {"leader": None})
    status.value = {"ready": True, "leader": "node-2:7070"}
    assert fetch_json(server, "/leader") == (200, {"leader": "node-2:7070"})


def test_unknown_path_is_404(server: HttpServer) -> None:
    code, body = fetch_json(server, "/nope")
    assert code == 404
    assert "/nope" in body["error"]


def test_failing_status_is_a_500_with_the_error(server: HttpServer, status: StatusSource) -> None:
    status.error = RuntimeError("zk exploded")
    for path in ("/ready", "/leader"):
        assert fetch_json(server, path) == (500, {"error": "RuntimeError: zk exploded"})
    assert fetch_json(server, "/health") == (200, {"ok": True})  # still serving


def test_head_sends_headers_without_a_body(server: HttpServer, status: StatusSource) -> None:
    code, body, headers = fetch(server, "/health", method="HEAD")
    assert (code, body) == (200, b"")
    assert int(headers["Content-Length"]) == len(b'{"ok": true}')
    assert fetch(server, "/ready", method="HEAD")[:2] == (503, b"")
    assert fetch(server, "/missing", method="HEAD")[:2] == (404, b"")


def test_metrics_endpoint_serves_the_registry(
    server: HttpServer, registry: CollectorRegistry
) -> None:
    metrics = Metrics(registry)
    metrics.set_leader(True)
    metrics.update_transition("ROLLED_FORWARD")
    code, body, headers = fetch(server, "/metrics")
    text = body.decode()
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert "pulsegate_leader 1.0" in text
    assert 'pulsegate_update_transitions_total{status="ROLLED_FORWARD"} 1.0' in text
    assert "pulsegate_storage_write_seconds_bucket" in text


def test_stop_is_idempotent_and_frees_the_port(registry: CollectorRegistry) -> None:
    first = HttpServer("127.0.0.1", 0, registry, dict)
    first.stop()  # before start: nothing to do
    first.start()
    port = first.port
    first.stop()
    first.stop()
    again = HttpServer("127.0.0.1", port, registry, dict)
    again.start()
    try:
        assert fetch(again, "/health")[0] == 200
    finally:
        again.stop()


def test_metrics_methods_update_their_series(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"pulsegate_{name}", labels)

    assert value("storage_writes_total", result="stale") == 0.0  # known labels start at 0
    assert value("zk_connection_state", state="connected") == 0.0
    metrics.set_zk_state("connected")
    metrics.set_zk_state("suspended")
    assert [value("zk_connection_state", state=s) for s in ("connected", "suspended", "lost")] == [
        0.0,
        1.0,
        0.0,
    ]
    with pytest.raises(ValueError):
        metrics.set_zk_state("confused")
    metrics.set_leader(True)
    metrics.set_leader(False)
    assert value("leader") == 0.0
    metrics.set_updates_active(3)
    metrics.instance_event("INSTANCE_UPDATED")
    metrics.heartbeat("ok")
    metrics.storage_write("ok", 0.004)
    metrics.storage_write("not_leader")
    metrics.step(0.02)
    metrics.set_rehydrate_seconds(1.5)
    metrics.driver_action("replace")
    metrics.error("stale_write")
    metrics.api_request("startJobUpdate", "ok")
    assert value("updates_active") == 3.0
    assert value("instance_events_total", action="INSTANCE_UPDATED") == 1.0
    assert value("heartbeats_total", answer="ok") == 1.0
    assert value("storage_writes_total", result="ok") == 1.0
    assert value("storage_writes_total", result="not_leader") == 1.0
    assert value("storage_write_seconds_count") == 1.0
    assert value("step_seconds_sum") == 0.02
    assert value("rehydrate_seconds") == 1.5
    assert value("driver_actions_total", kind="replace") == 1.0
    assert value("errors_total", reason="stale_write") == 1.0
    assert value("api_requests_total", method="startJobUpdate", result="ok") == 1.0


def test_each_metrics_object_needs_its_own_registry() -> None:
    Metrics(CollectorRegistry())
    Metrics(CollectorRegistry())  # no global registration, so a second one is fine


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_the_bound_keys() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    configure_logging("info", "json", stream)  # again: replaces, never duplicates
    log = structlog.get_logger("scheduler.test")
    log.bind(job="www/prod/web", update="u1").info("instance_replaced", instance=3)
    log.debug("not_shown")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    event = lines[0]
    assert event["event"] == "instance_replaced"
    assert (event["job"], event["update"], event["instance"]) == ("www/prod/web", "u1", 3)
    assert (event["level"], event["logger"]) == ("info", "scheduler.test")
    assert event["timestamp"].endswith("Z")


@pytest.mark.usefixtures("restore_logging")
def test_library_logs_pass_only_from_warning_up() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    kazoo = logging.getLogger("kazoo.client")
    kazoo.info("Connecting to %s", "127.0.0.1:2181")
    kazoo.warning("Connection dropped: %s", "socket closed")
    structlog.get_logger("scheduler.test").debug("debug_shown")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["level"], e["logger"]) for e in events] == [
        ("Connection dropped: socket closed", "warning", "kazoo.client"),
        ("debug_shown", "debug", "scheduler.test"),
    ]


@pytest.mark.usefixtures("restore_logging")
def test_console_format_and_bad_settings() -> None:
    stream = io.StringIO()
    configure_logging("warning", "console", stream)
    structlog.get_logger("scheduler.test").warning("leadership_lost", job="a/b/c")
    structlog.get_logger("scheduler.test").info("quiet")
    output = stream.getvalue()
    assert "leadership_lost" in output and "job=a/b/c" in output and "quiet" not in output
    with pytest.raises(ValueError):
        configure_logging("loud")
    with pytest.raises(ValueError):
        configure_logging("info", "xml")


def test_metric_objects_are_named_like_their_metrics(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    names = {metric.name for metric in registry.collect()}
    for attribute in (
        "updates_active",
        "update_transitions_total",
        "instance_events_total",
        "heartbeats_total",
        "leader",
        "zk_connection_state",
        "storage_writes_total",
        "storage_write_seconds",
        "step_seconds",
        "rehydrate_seconds",
        "driver_actions_total",
        "errors_total",
        "api_requests_total",
    ):
        assert getattr(metrics, attribute) is not None
        assert f"pulsegate_{attribute.removesuffix('_total')}" in names
