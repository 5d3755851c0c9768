"""A scheduler that other machines could reach with auth off refuses to start, and so does a
wildcard API address nobody could connect back to; the refusals are one line naming the key and
the fix, from the real `pulsegate scheduler run`. The accepted risks are logged at every start.

The refused starts never bind; the accepted ones are checked without binding (tests listen on
127.0.0.1 only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler.config import load_config
from scheduler.exposure import UnsafeExposure, check_exposure, is_loopback

ROOT = Path(__file__).resolve().parents[1]
PRINCIPAL = {"name": "ops", "token_sha256": "a" * 64, "roles": ["admin"]}


def run_scheduler(tmp_path: Path, zk_hosts: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PULSEGATE_")},
        "PYTHONPATH": str(ROOT),
        "PULSEGATE_LOG_FORMAT": "json",
        **env,
    }
    args = ["--zk", zk_hosts, "--driver", "sim", "--api-port", "0", "--http-port", "0"]
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "scheduler", "run", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The operator's line on stderr (the rest are JSON log lines)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pulsegate:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_wildcard_api_address_without_advertise_is_refused(tmp_path, zk_hosts) -> None:
    line = refusal(run_scheduler(tmp_path, zk_hosts, PULSEGATE_API_HOST="0.0.0.0"))
    assert "api.host = '0.0.0.0'" in line
    assert "set api.advertise (or PULSEGATE_API_ADVERTISE)" in line


def test_an_ipv6_wildcard_is_refused_too(tmp_path, zk_hosts) -> None:
    line = refusal(run_scheduler(tmp_path, zk_hosts, PULSEGATE_API_HOST="::"))
    assert "api.advertise" in line


def test_an_exposed_api_with_auth_off_is_refused(tmp_path, zk_hosts) -> None:
    result = run_scheduler(
        tmp_path,
        zk_hosts,
        PULSEGATE_API_HOST="0.0.0.0",
        PULSEGATE_API_ADVERTISE="sched1.example.com:7070",
    )
    line = refusal(result)
    assert "api.host = '0.0.0.0' is reachable from other machines with auth off" in line
    assert "api.allow_unauthenticated = true" in line
    assert "[auth] enabled = true" in line


def test_an_exposed_http_port_with_auth_off_is_refused(tmp_path, zk_hosts) -> None:
    line = refusal(run_scheduler(tmp_path, zk_hosts, PULSEGATE_HTTP_HOST="0.0.0.0"))
    assert "http.host = '0.0.0.0'" in line
    assert "api.host" not in line  # the API stays on loopback
    assert "PULSEGATE_API_ALLOW_UNAUTHENTICATED" in line


def config(**flags: object):
    return load_config(None, {}, {"zookeeper.hosts": "z:1", **flags})


def test_loopback_and_auth_pass_quietly() -> None:
    with capture_logs() as logs:
        check_exposure(config())
        check_exposure(config(**{"api.host": "::1", "http.host": "localhost"}))
    assert logs == []


def test_allowing_unauthenticated_exposure_logs_a_warning_every_start() -> None:
    exposed = config(
        **{
            "api.host": "0.0.0.0",
            "api.advertise": "sched1.example.com:7070",
            "api.allow_unauthenticated": True,
        }
    )
    with capture_logs() as logs:
        check_exposure(exposed)
        check_exposure(exposed)
    warned = [e for e in logs if e["event"] == "unauthenticated_exposure_allowed"]
    assert len(warned) == 2
    assert all(e["log_level"] == "warning" for e in warned)


def test_auth_on_allows_exposure_but_warns_without_tls() -> None:
    exposed = {"api.host": "10.1.2.3", "auth.enabled": True, "auth.principals": [PRINCIPAL]}
    with capture_logs() as logs:
        check_exposure(config(**exposed))
    assert [e["event"] for e in logs] == ["api_tls_off"]
    cert, key = ROOT / "tests/data/tls-cert.pem", ROOT / "tests/data/tls-key.pem"
    with capture_logs() as logs:
        check_exposure(config(**exposed, **{"api.tls_cert": str(cert), "api.tls_key": str(key)}))
    assert logs == []


def test_allow_unauthenticated_does_not_waive_advertise() -> None:
    with pytest.raises(UnsafeExposure, match=r"api\.advertise"):
        check_exposure(config(**{"api.host": "::", "api.allow_unauthenticated": True}))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
