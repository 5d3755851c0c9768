"""The CLI's docs stay true: docs/jobfile.md documents every job-file key with its default, and
the exit codes the CLI returns are the ones docs/quickstart.md lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from api import cli_common
from api.jobfile import HEALTH_CHECK, SCHEMA
from scheduler.tomlfile import REQUIRED

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _default(value: object) -> str:
    if value is REQUIRED:
        return "required"
    return "none" if value is None else f"`{json.dumps(value)}`"


def test_every_job_file_key_is_documented_with_its_default() -> None:
    rows = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(
            r"^\| `([\w.]+)` \| ([^|]+) \|", (DOCS / "jobfile.md").read_text(), re.M
        )
    }
    tables = [*SCHEMA.items(), ("task.health_check", HEALTH_CHECK)]
    expected = {
        f"{table}.{key}": "`1`" if (table, key) == ("update", "size") else _default(field.default)
        for table, fields in tables
        for key, field in fields.items()
    }
    assert rows == expected


def test_the_exit_codes_are_documented() -> None:
    text = (DOCS / "quickstart.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| `(\d+)` \|", text, re.M)}
    codes = {
        value
        for name, value in vars(cli_common).items()
        if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
    }
    assert documented == codes == set(range(10))
