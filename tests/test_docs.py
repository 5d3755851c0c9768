"""Docs stay true to the code: every configuration key is documented."""

from pathlib import Path

from scheduler.config import Config

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_key_is_in_the_operations_guide() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = [key for key, _, _ in Config.describe() if f"`{key}`" not in text]
    assert missing == []
