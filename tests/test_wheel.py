"""pulsegate installed the standard Python way: a wheel built from the tree, installed into a
fresh virtualenv (its dependencies from the package index, so thriftpy2 is the stock wheel, not
the one deploy/bootstrap.sh rebuilds), runs its CLI and the whole demo from there, with nothing
of the checkout on its path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source], work)
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


def test_the_installed_cli_and_demo_run_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python]
    run([*pip, "install", "-q", wheel], tmp_path)
    cli = venv / "bin" / "pulsegate"
    outside = tmp_path / "elsewhere"  # not the checkout: nothing found by accident
    outside.mkdir()

    where = run([python, "-c", "import api; print(api.__file__)"], outside).stdout
    assert where.startswith(str(venv)), where
    assert "scheduler" in run([cli, "--help"], outside).stdout
    version = run(
        [python, "-c", "import importlib.metadata as m; print(m.version('pulsegate'))"], outside
    )
    assert run([cli, "--version"], outside).stdout.strip() == f"pulsegate {version.stdout.strip()}"

    state = tmp_path / "demo"
    out = run([cli, "demo", "--state-dir", state], outside).stdout
    assert "demo: 1 update rolled forward, 1 rolled back" in out, out
    assert "INSTANCE_UPDATE_FAILED (health check failed" in out, out
    guarded = run(
        [python, "-c", "from api.wire import compiled_decoder_is_guarded as g; print(g())"], outside
    )
    if guarded.stdout.strip() == "False":  # the stock wheel: the demo ran on the fallback
        assert "thrift_decoder_unguarded" in (state / "scheduler.log").read_text()
