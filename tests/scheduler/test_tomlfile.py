"""TOML loading, `locate` and the schema checker: every error names the key, line and rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.tomlfile import Field, TomlError, check_table, dotted, load_toml, locate
from updater.errors import PulsegateError

TEXT = """\
# a comment
title = "x"  # trailing comment

[zookeeper]
hosts = "a:1"
"quoted.key" = 2
session.timeout = 3

[api]
doc = \"\"\"
fake = 1
\"\"\"
tags = [
  "a",  # one
  "b",
]
inline = { a = 1, b = { c = [{ d = 1 }, { d = 2 }] } }

[[auth.principals]]
name = "a"

[[auth.principals]]
name = "b"
roles = ["admin"]

[auth.principals.extra]
z = 1

[auth]
enabled = true
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("title", 2),
        ("zookeeper", 4),
        ("zookeeper.hosts", 5),
        ('zookeeper."quoted.key"', 6),
        ("zookeeper.session", 7),
        ("zookeeper.session.timeout", 7),
        ("api.tags", 13),
        ("api.tags[1]", 15),
        ("api.inline.b.c[1].d", 17),
        ("auth", 19),
        ("auth.principals[0].name", 20),
        ("auth.principals[1]", 22),
        ("auth.principals[1].name", 23),
        ("auth.principals[1].roles[0]", 24),
        ("auth.principals[1].extra.z", 27),
        ("auth.enabled", 30),
    ],
)
def test_locate_finds_the_defining_line(key: str, line: int) -> None:
    assert locate(TEXT, key) == line


@pytest.mark.parametrize("key", ["api.fake", "fake", "nope", "", "a..b", "api.tags[9]"])
def test_locate_returns_none_for_keys_it_cannot_find(key: str) -> None:
    assert locate(TEXT, key) is None


def test_locate_skips_lines_it_cannot_read() -> None:
    assert locate("a = 1\nthis is not toml\nb = 2\n", "b") == 3


def test_dotted_quotes_keys_that_are_not_bare_and_locate_reads_them_back() -> None:
    assert dotted("", "a") == "a"
    assert dotted("a", "b c") == 'a."b c"'
    assert dotted("a", 3) == "a[3]"
    assert locate('[a]\n"b c" = 1\n', dotted("a", "b c")) == 2


def test_load_toml_returns_data_and_text(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[a]\nb = 1\n")
    assert load_toml(path) == ({"a": {"b": 1}}, "[a]\nb = 1\n")


def test_syntax_error_carries_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("a = 1\n[b]\nc = = 2\n")
    with pytest.raises(TomlError) as caught:
        load_toml(path)
    err = caught.value
    assert (err.key, err.line, err.reason) == ("", 3, "bad_file")
    assert str(err).startswith(f"{path}:3: ")
    assert "(at line" not in str(err)
    assert isinstance(err, PulsegateError)


def test_error_at_end_of_document_points_at_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("a = 1\nb = [1,\n2\n")
    with pytest.raises(TomlError) as caught:
        load_toml(path)
    assert caught.value.line == 3


def test_missing_file_is_a_toml_error(tmp_path: Path) -> None:
    with pytest.raises(TomlError, match="cannot read file"):
        load_toml(tmp_path / "missing.toml")


SCHEMA: dict[str, Any] = {
    "server": {
        "host": Field(str, "127.0.0.1", doc="listen address"),
        "port": Field(int, 80, min=0, max=65535),
        "timeout_s": Field(float, 1.5, min=0.1),
        "mode": Field(str, "a", choices=("a", "b")),
        "debug": Field(bool, False),
        "name": Field(str, check=lambda v: None if v else "must not be empty"),
    },
    "items": Field(list, [], items={"id": Field(int), "tags": Field(list, [], items=str)}),
}


def check(text: str) -> dict[str, Any]:
    import tomllib

    return check_table(tomllib.loads(text), SCHEMA, "f.toml", text)


def test_defaults_are_filled_in_and_ints_are_accepted_as_floats() -> None:
    out = check('[server]\nname = "n"\ntimeout_s = 2\n')
    assert out == {
        "server": {
            "host": "127.0.0.1",
            "port": 80,
            "timeout_s": 2.0,
            "mode": "a",
            "debug": False,
            "name": "n",
        },
        "items": [],
    }
    assert isinstance(out["server"]["timeout_s"], float)


def test_arrays_of_tables_are_checked_item_by_item() -> None:
    out = check('[server]\nname = "n"\n[[items]]\nid = 1\n[[items]]\nid = 2\ntags = ["x"]\n')
    assert out["items"] == [{"id": 1, "tags": []}, {"id": 2, "tags": ["x"]}]


@pytest.mark.parametrize(
    ("text", "key", "line", "rule"),
    [
        ('[server]\nname = "n"\nport = "80"\n', "server.port", 3, "must be an integer"),
        ('[server]\nname = "n"\nport = true\n', "server.port", 3, "must be an integer"),
        ('[server]\nname = "n"\ntimeout_s = "1"\n', "server.timeout_s", 3, "must be a number"),
        (
            '[server]\nname = "n"\ntimeout_s = nan\n',
            "server.timeout_s",
            3,
            "must be a finite number",
        ),
        (
            '[server]\nname = "n"\ndebug = 1\n',
            "server.debug",
            3,
            "must be a boolean (true or false)",
        ),
        ('[server]\nname = "n"\nport = 70000\n', "server.port", 3, "must be between 0 and 65535"),
        ('[server]\nname = "n"\ntimeout_s = 0.0\n', "server.timeout_s", 3, "must be at least 0.1"),
        ('[server]\nname = "n"\nmode = "c"\n', "server.mode", 3, "must be one of a, b"),
        ('[server]\nname = ""\n', "server.name", 2, "must not be empty"),
        ("\n[server]\nport = 1\n", "server.name", 2, "missing required key"),
        ("server = 1\n", "server", 1, "must be a table"),
        ('[server]\nname = "n"\n[[items]]\n', "items[0].id", 3, "missing required key"),
        (
            '[server]\nname = "n"\n[[items]]\nid = 1\ntags = ["a", 2]\n',
            "items[0].tags[1]",
            5,
            "must be a string",
        ),
        ('items = [1]\n[server]\nname = "n"\n', "items[0]", 1, "must be a table"),
    ],
)
def test_each_broken_rule_names_key_line_and_rule(
    text: str, key: str, line: int, rule: str
) -> None:
    with pytest.raises(TomlError) as caught:
        check(text)
    err = caught.value
    assert (err.path, err.key, err.line, err.rule) == ("f.toml", key, line, rule)
    assert str(err).startswith(f"f.toml:{line}: {key}: {rule}")


def test_wrong_type_message_shows_the_value() -> None:
    with pytest.raises(TomlError) as caught:
        check('[server]\nname = "n"\nport = "80"\n')
    assert str(caught.value) == "f.toml:3: server.port: must be an integer (got '80')"


def test_missing_required_key_at_top_level_has_no_line() -> None:
    with pytest.raises(TomlError) as caught:
        check_table({}, {"name": Field(str)}, "f.toml", "")
    assert (caught.value.key, caught.value.line) == ("name", None)
    assert str(caught.value) == "f.toml: name: missing required key"


def test_unknown_key_suggests_the_closest_known_key() -> None:
    with pytest.raises(TomlError) as caught:
        check('[server]\nname = "n"\nprot = 1\n')
    err = caught.value
    assert (err.key, err.line, err.rule) == ("server.prot", 3, "unknown key")
    assert err.hint == "did you mean server.port?"
    assert str(err) == "f.toml:3: server.prot: unknown key (did you mean server.port?)"


def test_unknown_key_without_a_close_match_has_no_hint() -> None:
    with pytest.raises(TomlError) as caught:
        check('[server]\nname = "n"\n[zzzzzz]\n')
    assert (caught.value.key, caught.value.line, caught.value.hint) == ("zzzzzz", 3, "")


def test_check_table_does_not_mutate_its_input_or_share_defaults() -> None:
    data: dict[str, Any] = {"server": {"name": "n"}}
    first = check_table(data, SCHEMA, "f.toml", "")
    first["items"].append("x")
    assert data == {"server": {"name": "n"}}
    assert check_table(data, SCHEMA, "f.toml", "")["items"] == []
