"""Files that ship with pulsegate: the Thrift IDL and the examples (the demo's service and job
files). In a source checkout they are at the top of the tree (`thrift/`, `examples/`: the source
of truth); an installed wheel carries them inside this package (`api/_idl`, `api/_examples`,
mapped by setup.py)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent


def _found(what: str, *candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"pulsegate's {what} is missing (looked for {looked}); reinstall it")


def idl_path() -> Path:
    """thrift/pulsegate.thrift."""
    return _found(
        "Thrift IDL", _HERE / "_idl" / "pulsegate.thrift", _CHECKOUT / "thrift" / "pulsegate.thrift"
    )


def examples_dir() -> Path:
    """examples/: the example service and its job files."""
    return _found("examples directory", _HERE / "_examples", _CHECKOUT / "examples")
