"""`updater/` is the pure core: it may import only the standard library and attrs, and none of
the standard library's I/O, thread or clock modules."""

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "updater"
ALLOWED_THIRD_PARTY = {"attrs", "updater"}
FORBIDDEN_STDLIB = {
    "socket",
    "threading",
    "subprocess",
    "time",
    "os",
    "asyncio",
    "multiprocessing",
    "select",
    "selectors",
    "signal",
    "random",
    "datetime",
    "urllib",
    "http",
    "io",
    "shutil",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.add("__import__")
    return found


def test_core_imports_only_stdlib_and_attrs() -> None:
    files = sorted(CORE.glob("**/*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        bad = {
            m
            for m in imported_modules(path)
            if m not in ALLOWED_THIRD_PARTY
            and (m not in sys.stdlib_module_names or m in FORBIDDEN_STDLIB)
            and m != "__future__"
        }
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_the_checker_catches_impure_imports(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import kazoo\nfrom time import monotonic\nimport collections\n")
    assert imported_modules(sample) == {"kazoo", "time", "collections"}
