"""Config loading: defaults, file → env → flags precedence, and errors that name the key, its
source (file and line, env var, flag) and the rule."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import attrs
import pytest

from scheduler.config import KEYS, SCHEMA, Config, ConfigError, load_config
from scheduler.tomlfile import TomlError
from updater.errors import PulsegateError

TOKEN = hashlib.sha256(b"secret").hexdigest()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def error_from(tmp_path: Path, text: str = "", **kwargs: object) -> ConfigError:
    path = write(tmp_path, text) if text else None
    with pytest.raises(ConfigError) as caught:
        load_config(path, **{"env": {}, **kwargs})  # type: ignore[arg-type]
    return caught.value


def test_defaults() -> None:
    config = load_config(env={})
    assert config.scheduler_id == f"{socket.gethostname()}-{os.getpid()}"
    assert attrs.evolve(config, scheduler_id="") == Config()
    assert (config.zk_hosts, config.zk_root, config.zk_session_timeout_s) == (
        "embedded",
        "/pulsegate",
        10.0,
    )
    assert (config.api_port, config.http_port, config.driver, config.log_format) == (
        7070,
        7071,
        "local",
        "auto",
    )
    assert config.auth_principals == ()
    assert config.zk_embedded
    assert config.history_max_age_ms == 30 * 86_400_000
    assert config.resolved_embedded_data_dir == str(Path("var") / "zookeeper")


def test_config_defaults_match_the_key_schema() -> None:
    defaults = Config()
    for key in KEYS.values():
        expected = () if key.dotted == "auth.principals" else key.field.default
        assert getattr(defaults, key.attr) == expected, key.dotted
    assert {f"{section}.{name}" for section, names in SCHEMA.items() for name in names} == set(KEYS)


def test_file_values_are_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[scheduler]
id = "node-1"
state_dir = "/tmp/pg"

[zookeeper]
hosts = "127.0.0.1:2181,127.0.0.1:2182"
session_timeout_s = 5      # an int is fine for a float key
embedded_data_dir = "/data/zk"

[api]
transport = "framed"
tls_cert = "c.pem"
tls_key = "k.pem"

[history]
keep = 0
""",
    )
    config = load_config(path, env={})
    assert config.scheduler_id == "node-1"
    assert config.zk_hosts == "127.0.0.1:2181,127.0.0.1:2182"
    assert not config.zk_embedded
    assert config.zk_session_timeout_s == 5.0
    assert isinstance(config.zk_session_timeout_s, float)
    assert config.resolved_embedded_data_dir == "/data/zk"
    assert (config.api_transport, config.api_tls_cert, config.api_tls_key) == (
        "framed",
        "c.pem",
        "k.pem",
    )
    assert config.history_keep == 0
    assert config.api_port == 7070  # untouched keys keep their defaults


def test_precedence_is_flags_then_env_then_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nport = 1000\nhost = "0.0.0.0"\n[zookeeper]\nhosts = "f:1"\n')
    env = {"PULSEGATE_API_PORT": "2000", "PULSEGATE_ZOOKEEPER_HOSTS": "e:1", "HOME": "/x"}
    flags = {"api.port": 3000, "zookeeper.hosts": None}
    config = load_config(path, env=env, flags=flags)
    assert config.api_port == 3000  # flag beats env and file
    assert config.zk_hosts == "e:1"  # env beats file; a None flag means "not given"
    assert config.api_host == "0.0.0.0"  # file beats default


def test_env_values_are_parsed_to_the_key_type() -> None:
    env = {
        "PULSEGATE_AUTH_ENABLED": "yes",
        "PULSEGATE_AUTH_READS_REQUIRE_AUTH": "0",
        "PULSEGATE_ZOOKEEPER_SESSION_TIMEOUT_S": "2.5",
        "PULSEGATE_DRIVER_KIND": "local",
        "PULSEGATE_HISTORY_KEEP": " 3 ",
        "PULSEGATE_AUTH_PRINCIPALS": f'[{{"name": "ci", "token_sha256": "{TOKEN}"}}]',
        "PULSEGATE_CONFIG": "/etc/pulsegate.toml",  # read by the CLI, not a key
    }
    config = load_config(env=env)
    assert config.auth_enabled is True
    assert config.reads_require_auth is False
    assert config.zk_session_timeout_s == 2.5
    assert config.driver == "local"
    assert config.history_keep == 3
    assert config.auth_principals == (("ci", TOKEN, ()),)


def test_string_flags_are_parsed_like_env_values() -> None:
    assert load_config(env={}, flags={"api.port": "0", "auth.enabled": "true"}).api_port == 0


def test_auth_principals_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[auth]
enabled = true
reads_require_auth = true

[[auth.principals]]
name = "alice"
token_sha256 = "{TOKEN}"
roles = ["admin"]

[[auth.principals]]
name = "deployer"
token_sha256 = "{"0" * 64}"
roles = ["operator:web", "monitor:*", "operator:*"]
""",
    )
    config = load_config(path, env={})
    assert config.auth_enabled and config.reads_require_auth
    assert config.auth_principals == (
        ("alice", TOKEN, ("admin",)),
        ("deployer", "0" * 64, ("operator:web", "monitor:*", "operator:*")),
    )


PRINCIPAL = '[[auth.principals]]\nname = "a"\ntoken_sha256 = "{token}"\nroles = [{roles}]\n'


@pytest.mark.parametrize(
    ("text", "key", "line", "rule"),
    [
        (
            PRINCIPAL.format(token=TOKEN.upper(), roles=""),
            "auth.principals[0].token_sha256",
            3,
            "must be 64 lowercase hex characters",
        ),
        (
            PRINCIPAL.format(token="abc", roles=""),
            "auth.principals[0].token_sha256",
            3,
            "must be 64 lowercase hex characters",
        ),
        (
            PRINCIPAL.format(token=TOKEN, roles='"admin", "root"'),
            "auth.principals[0].roles[1]",
            4,
            "must be 'admin', 'operator:<role>' or 'monitor:<role>' (<role> a job role or '*')",
        ),
        (
            PRINCIPAL.format(token=TOKEN, roles='"operator:"'),
            "auth.principals[0].roles[0]",
            4,
            "must be 'admin', 'operator:<role>' or 'monitor:<role>' (<role> a job role or '*')",
        ),
        (
            PRINCIPAL.format(token=TOKEN, roles="").replace('"a"', '""'),
            "auth.principals[0].name",
            2,
            "must not be empty",
        ),
        (
            '[[auth.principals]]\nname = "a"\n',
            "auth.principals[0].token_sha256",
            1,
            "missing required key",
        ),
        (
            PRINCIPAL.format(token=TOKEN, roles="") + PRINCIPAL.format(token="1" * 64, roles=""),
            "auth.principals[1].name",
            6,
            "duplicate principal name",
        ),
        (
            PRINCIPAL.format(token=TOKEN, roles="")
            + PRINCIPAL.format(token=TOKEN, roles="").replace('"a"', '"b"'),
            "auth.principals[1].token_sha256",
            7,
            "duplicate token",
        ),
    ],
)
def test_bad_principals_are_named_with_their_line(
    tmp_path: Path, text: str, key: str, line: int, rule: str
) -> None:
    err = error_from(tmp_path, text)
    assert (err.key, err.line, err.rule) == (key, line, rule)


@pytest.mark.parametrize(
    ("text", "key", "line", "rule"),
    [
        (
            "[zookeeper]\nsession_timeout_s = 0.5\n",
            "zookeeper.session_timeout_s",
            2,
            "must be between 1 and 600",
        ),
        (
            '[zookeeper]\nsession_timeout_s = "10"\n',
            "zookeeper.session_timeout_s",
            2,
            "must be a number",
        ),
        ("[api]\nport = 70000\n", "api.port", 2, "must be between 0 and 65535"),
        ("[api]\nport = true\n", "api.port", 2, "must be an integer"),
        ('[api]\ntransport = "http"\n', "api.transport", 2, "must be one of buffered, framed"),
        ('[api]\nadvertise = "nohost"\n', "api.advertise", 2, "must be host:port"),
        ("[api]\nmax_instances = 0\n", "api.max_instances", 2, "must be between 1 and 1000000"),
        ('[driver]\nkind = "k8s"\n', "driver.kind", 2, "must be one of sim, local"),
        ("[history]\nkeep = -1\n", "history.keep", 2, "must be at least 0"),
        ("[history]\nmax_age_days = 0\n", "history.max_age_days", 2, "must be greater than 0"),
        (
            "[history]\nprune_interval_s = 0.5\n",
            "history.prune_interval_s",
            2,
            "must be at least 1",
        ),
        ('[log]\nlevel = "trace"\n', "log.level", 2, "must be one of debug, info, warning, error"),
        ('[scheduler]\nid = "a/b"\n', "scheduler.id", 2, "must not contain '/' or spaces"),
        ('[scheduler]\nstate_dir = ""\n', "scheduler.state_dir", 2, "must not be empty"),
        ("[auth]\nenabled = 1\n", "auth.enabled", 2, "must be a boolean (true or false)"),
        ('[api]\ntls_cert = "c.pem"\n', "api.tls_cert", 2, "must be set together with api.tls_key"),
        ('[api]\ntls_key = "k.pem"\n', "api.tls_key", 2, "must be set together with api.tls_cert"),
    ],
)
def test_file_errors_name_key_line_and_rule(
    tmp_path: Path, text: str, key: str, line: int, rule: str
) -> None:
    err = error_from(tmp_path, "# pulsegate\n" + text)
    path = tmp_path / "config.toml"
    assert (err.path, err.key, err.line, err.rule) == (str(path), key, line + 1, rule)
    assert str(err).startswith(f"{path}:{line + 1}: {key}: {rule}")
    assert err.reason == "bad_config"
    assert isinstance(err, TomlError) and isinstance(err, PulsegateError)


@pytest.mark.parametrize(
    "hosts", ["embedded", "h:1", "127.0.0.1:2181,127.0.0.1:2182", "h:1,h:2/chroot"]
)
def test_good_zookeeper_hosts(hosts: str) -> None:
    assert load_config(env={"PULSEGATE_ZOOKEEPER_HOSTS": hosts}).zk_hosts == hosts


@pytest.mark.parametrize("hosts", ["", "embeded", "h", "h:x", "h:1,", "h:0", "h:70000", ":1"])
def test_bad_zookeeper_hosts(hosts: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, flags={"zookeeper.hosts": hosts})
    assert caught.value.rule == "must be 'embedded' or host:port[,host:port...]"


@pytest.mark.parametrize("root", ["/", "", "pulsegate", "/pulsegate/", "/a//b"])
def test_bad_zookeeper_root(root: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, flags={"zookeeper.root": root})
    assert caught.value.key == "zookeeper.root"
    assert caught.value.rule == "must start with '/', not end with '/', and not be '/' alone"


def test_good_zookeeper_root() -> None:
    assert load_config(env={}, flags={"zookeeper.root": "/a/b"}).zk_root == "/a/b"


def test_unknown_file_key_suggests_the_closest(tmp_path: Path) -> None:
    err = error_from(tmp_path, '[zookeeper]\nhosts = "h:1"\nsession_timeout = 5\n')
    assert (err.key, err.line, err.rule) == ("zookeeper.session_timeout", 3, "unknown key")
    assert str(err) == (
        f"{tmp_path / 'config.toml'}:3: zookeeper.session_timeout: unknown key "
        "(did you mean zookeeper.session_timeout_s?)"
    )


def test_unknown_file_section(tmp_path: Path) -> None:
    err = error_from(tmp_path, "[zookeper]\nhosts = 1\n")
    assert (err.key, err.line, err.hint) == ("zookeper", 1, "did you mean zookeeper?")


def test_syntax_error_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    err = error_from(tmp_path, "[api]\nport = \n")
    assert (err.key, err.line, err.reason) == ("", 2, "bad_config")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize(
    ("var", "value", "key", "rule"),
    [
        ("PULSEGATE_API_PORT", "http", "api.port", "must be an integer"),
        ("PULSEGATE_API_PORT", "-1", "api.port", "must be between 0 and 65535"),
        (
            "PULSEGATE_AUTH_ENABLED",
            "maybe",
            "auth.enabled",
            "must be a boolean (1/0/true/false/yes/no)",
        ),
        (
            "PULSEGATE_ZOOKEEPER_SESSION_TIMEOUT_S",
            "soon",
            "zookeeper.session_timeout_s",
            "must be a number",
        ),
        ("PULSEGATE_LOG_FORMAT", "xml", "log.format", "must be one of auto, json, console"),
        ("PULSEGATE_AUTH_PRINCIPALS", "[", "auth.principals", "must be a JSON array"),
        ("PULSEGATE_AUTH_PRINCIPALS", "{}", "auth.principals", "must be an array"),
        (
            "PULSEGATE_AUTH_PRINCIPALS",
            '[{"name": "x"}]',
            "auth.principals[0].token_sha256",
            "missing required key",
        ),
        ("PULSEGATE_API_TLS_KEY", "k.pem", "api.tls_key", "must be set together with api.tls_cert"),
    ],
)
def test_env_errors_name_the_variable_key_and_rule(
    var: str, value: str, key: str, rule: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={var: value})
    err = caught.value
    assert (err.path, err.key, err.line, err.rule) == (var, key, None, rule)
    assert str(err).startswith(f"{var}: {key}: {rule}")


def test_unknown_env_variable_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"PULSEGATE_ZOOKEEPER_HOST": "h:1"})
    assert str(caught.value) == (
        "PULSEGATE_ZOOKEEPER_HOST: unknown environment variable "
        "(did you mean PULSEGATE_ZOOKEEPER_HOSTS?)"
    )


def test_other_env_variables_are_ignored() -> None:
    assert load_config(env={"PATH": "/bin", "PULSEGATEWAY": "x"}).api_port == 7070


def test_flag_errors_name_the_flag_and_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, flags={"api.port": 1.5})
    assert str(caught.value) == "flags: api.port: must be an integer (got 1.5)"
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, flags={"api.prot": 1})
    assert str(caught.value) == "flags: api.prot: unknown key (did you mean api.port?)"


def test_cross_key_error_names_the_source_of_the_key_that_was_set(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, flags={"api.tls_cert": "", "api.tls_key": "k.pem"})
    assert (caught.value.path, caught.value.key) == ("flags", "api.tls_key")


def test_describe_lists_every_key_with_default_and_doc() -> None:
    rows = {key: (default, doc) for key, default, doc in Config.describe()}
    assert set(KEYS) <= set(rows)
    assert rows["zookeeper.hosts"][0] == '"embedded"'
    assert rows["zookeeper.session_timeout_s"][0] == "10.0"
    assert rows["auth.enabled"][0] == "false"
    assert rows["auth.principals[].token_sha256"][0] == "(required)"
    assert all(doc for _, doc in rows.values())


def test_env_names_derive_from_keys() -> None:
    assert KEYS["zookeeper.hosts"].env == "PULSEGATE_ZOOKEEPER_HOSTS"
    assert KEYS["driver.kind"].env == "PULSEGATE_DRIVER_KIND"
    assert KEYS["auth.reads_require_auth"].env == "PULSEGATE_AUTH_READS_REQUIRE_AUTH"


def test_config_is_frozen_and_accepts_principals_as_tables() -> None:
    config = Config(auth_principals=[{"name": "a", "token_sha256": TOKEN, "roles": ["admin"]}])
    assert config.auth_principals == (("a", TOKEN, ("admin",)),)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.api_port = 1  # type: ignore[misc]
