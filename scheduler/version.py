"""The installed distribution's version, read once from its metadata so that `pulsegate --version`,
getSchedulerInfo and pyproject.toml can never disagree."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed() -> str:
    try:
        return version("pulsegate")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


VERSION = _installed()
