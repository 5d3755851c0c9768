"""pulsegate installed the standard Python way: a wheel built from the tree, installed into a
fresh virtualenv (its dependencies from the package index, so thriftpy2 is the stock wheel, not
the one deploy/bootstrap.sh rebuilds), runs its CLI, a scheduler and the whole demo from there,
outside the checkout and with nothing of it on its path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("updater", "scheduler", "api")
# Where the files that live outside the packages in a checkout ship in the wheel (setup.py).
BUNDLED = {"thrift": "api/_idl", "examples": "api/_examples"}
BUILD_INPUTS = (*PACKAGES, *BUNDLED, "pyproject.toml", "setup.py", "README.md")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")

pytestmark = pytest.mark.slow


def run(argv: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def shipped(root: Path) -> set[str]:
    """Every file the wheel must carry, as its path inside the wheel."""
    out = set()
    for top in (*PACKAGES, *BUNDLED):
        for path in (root / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                inside = path.relative_to(root).as_posix()
                prefix = BUNDLED.get(top)
                out.add(f"{prefix}{inside[len(top) :]}" if prefix else inside)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the tree, so the build leaves nothing in the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=JUNK)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # Build isolation: the build backend comes from the index, as for any user (a fresh venv's
    # own setuptools may be too old to build wheels).
    run([*pip, "wheel", "--no-deps", "-q", "-w", dist, source], work)
    (built,) = dist.glob("pulsegate-*.whl")
    return built


def test_the_wheel_carries_the_idl_the_examples_and_every_package_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "api/_idl/pulsegate.thrift" in names
    assert {"api/_examples/service.py", "api/_examples/hello-v1.toml"} <= names
    missing = shipped(ROOT) - names  # templates and static assets of the web UI included
    assert not missing, f"not in the wheel: {sorted(missing)}"
    # Not a top-level `thrift/`: that is Apache Thrift's package.
    assert not any(n.startswith("thrift/") for n in names)


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Path:
    """A fresh virtualenv with the wheel and its dependencies from the index."""
    venv = wheel.parent.parent / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], wheel.parent)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python"]
    run([*pip, venv / "bin" / "python", "install", "-q", wheel], wheel.parent)
    return venv


def test_the_installed_cli_answers_help_and_version(venv: Path, tmp_path: Path) -> None:
    python, cli = venv / "bin" / "python", venv / "bin" / "pulsegate"
    where = run([python, "-c", "import api; print(api.__file__)"], tmp_path).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    assert "scheduler" in run([cli, "--help"], tmp_path).stdout
    version = run(
        [python, "-c", "import importlib.metadata as m; print(m.version('pulsegate'))"], tmp_path
    )
    assert run([cli, "--version"], tmp_path).stdout.strip() == f"pulsegate {version.stdout.strip()}"


def test_the_installed_scheduler_runs_and_gets_ready(venv: Path, tmp_path: Path) -> None:
    """Ready means its own API answered it: through the fallback codec with the stock wheel."""
    log = tmp_path / "scheduler.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PULSEGATE_LOG_FORMAT": "json", "PULSEGATE_ZOOKEEPER_EMBEDDED_PORT": "0"}
    argv = [venv / "bin" / "pulsegate", "scheduler", "run", "--zk", "embedded"]
    argv += ["--api-port", "0", "--http-port", "0"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            started = [e for e in events(log) if e.get("event") == "scheduler_started"]
            if not started:
                return False
            try:
                with urllib.request.urlopen(f"http://{started[0]['http']}/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, message="the installed scheduler did not get ready")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()


def events(log: Path) -> list[dict]:
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_the_installed_demo_runs(venv: Path, tmp_path: Path) -> None:
    python, cli = venv / "bin" / "python", venv / "bin" / "pulsegate"
    state = tmp_path / "demo"
    out = run([cli, "demo", "--state-dir", state], tmp_path).stdout
    assert "demo: 1 update rolled forward, 1 rolled back" in out, out
    assert "INSTANCE_UPDATE_FAILED (health check failed" in out, out
    guarded = run(
        [python, "-c", "from api.wire import compiled_decoder_is_guarded as g; print(g())"],
        tmp_path,
    )
    if guarded.stdout.strip() == "False":  # the stock wheel: the demo ran on the fallback
        assert "thrift_decoder_unguarded" in (state / "scheduler.log").read_text()
