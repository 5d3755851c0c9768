"""docs/quickstart.md works step by step as written: its shell blocks run in order, each line as
its own shell command, from a directory that holds the repository's `examples/` (so relative
paths are the doc's), against real processes: an embedded ZooKeeper, a scheduler with the local
driver, the example service's instances, the checked service and the heartbeat monitor.

A line ending in `&` starts in the background; `kill %N` stops the Nth of those (by pid); a
`# exits N` comment is the exit code expected (else 0). Only the ports differ from the doc, so
that the test shares the machine safely: the scheduler's come from the environment
(PULSEGATE_API_PORT, ...) and the checked service's port replaces 8089."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from api.client import PulsegateClient
from scheduler.drivers.process import free_port
from updater.errors import PulsegateError
from updater.keys import JobKey

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "quickstart.md"
JOB = JobKey("demo", "local", "hello")
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
EXITS = re.compile(r"#\s*exits (\d+)")


def quickstart_commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for every line of every ```sh block, in order."""
    found = []
    for block in BLOCK.findall(text):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                expected = EXITS.search(line)
                found.append((command, int(expected.group(1)) if expected else 0))
    return found


def test_the_doc_has_the_steps_the_test_relies_on() -> None:
    commands = [c for c, _ in quickstart_commands(DOC.read_text())]
    assert any(c.startswith("pulsegate scheduler run --zk embedded") for c in commands)
    assert any("--check-http http://127.0.0.1:8089/health" in c for c in commands)
    expected = quickstart_commands(DOC.read_text())
    assert ("pulsegate update start examples/hello-bad.toml --wait", 4) in expected
    assert ("pulsegate update wait demo/local/hello --timeout 120", 0) in expected


def _instance_pids(workdir: Path) -> list[int]:
    """Example-service processes running in `workdir`: only ones this test started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"examples/service.py" in cmdline and Path(cwd) == workdir:
            pids.append(int(entry.name))
    return pids


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the shell and what it runs
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    api_port, http_port, check_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PULSEGATE_")},
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PULSEGATE_API_PORT": str(api_port),
        "PULSEGATE_HTTP_PORT": str(http_port),
        "PULSEGATE_ZOOKEEPER_EMBEDDED_PORT": "0",
        "PULSEGATE_SCHEDULER": f"127.0.0.1:{api_port}",
    }
    background: list[subprocess.Popen[bytes]] = []
    outputs: dict[str, str] = {}
    client = PulsegateClient(f"127.0.0.1:{api_port}", retry_for_s=5)
    try:
        for command, expected in quickstart_commands(DOC.read_text()):
            command = command.replace("8089", str(check_port))
            if command.startswith("kill %"):
                # the doc's own clean-up: the instances must be gone before the scheduler goes
                wait_until(lambda: not client.has_instances(JOB), 60, 0.2, "instances left")
                for job_number in re.findall(r"%(\d+)", command):
                    _stop(background[int(job_number) - 1])
                continue
            if command.endswith("&"):
                background.append(
                    subprocess.Popen(
                        command[:-1], shell=True, cwd=work, env=env, start_new_session=True
                    )
                )
                continue
            done = subprocess.run(
                command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=240
            )
            outputs[command] = done.stdout
            assert done.returncode == expected, (
                f"{command!r} exited {done.returncode}, not {expected}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        started = outputs['pulsegate update start examples/hello-v2.toml -m "version 2"']
        assert f"page: http://127.0.0.1:{http_port}/updates/demo/local/hello/" in started
        monitor = (work / "var" / "monitor.log").read_text()
        assert "paused" not in monitor and "check failed" not in monitor, monitor
        assert monitor.splitlines()[-1] == "heartbeat: FINISHED (update ROLLED_FORWARD)"
        bad = outputs["pulsegate update start examples/hello-bad.toml --wait"]
        logs = work.resolve() / "var" / "quickstart" / "logs" / "demo" / "local" / "hello"
        assert "failed: " in bad and f"its output: {logs}/" in bad
        assert "no change" in outputs["pulsegate update start examples/hello-v2.toml"]
        log = (work / "var" / "quickstart.log").read_text().splitlines()
        assert log[0].startswith("pulsegate: driver: local")  # the one-line notice
        assert log[1].startswith("{")  # log.format auto: JSON lines in a file
    finally:
        try:
            if client.has_instances(JOB):
                client.kill_job(JOB)
                wait_until(lambda: not client.has_instances(JOB), 60, 0.2)
        except (PulsegateError, AssertionError):
            pass
        finally:
            client.close()
            for proc in background:
                _stop(proc)
            for pid in _instance_pids(work):  # a failed run's leftovers
                os.kill(pid, signal.SIGKILL)
