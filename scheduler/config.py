"""The scheduler's settings: a frozen `Config`, loaded once at start-up from a TOML file, then
the environment, then flags (later sources win), and passed explicitly from there on.

Each `Config` field declares its TOML key, default, doc and rules in one place; `KEYS` is
derived from those declarations, and the TOML schema, the `PULSEGATE_<SECTION>_<KEY>` env
names and `Config.describe()` (the docs) all derive from `KEYS`."""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from scheduler.tomlfile import REQUIRED, Field, TomlError, check_table, load_toml, locate
from updater.errors import InvalidRequest
from updater.keys import check_name

ENV_PREFIX = "PULSEGATE_"
# PULSEGATE_* variables that are not config keys: the config file's path, and the CLI client's
# settings (a shell that exports them also runs `pulsegate scheduler run`).
ENV_NOT_KEYS = frozenset({"PULSEGATE_CONFIG", "PULSEGATE_SCHEDULER", "PULSEGATE_TOKEN"})
_META = "pulsegate.key"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(TomlError):
    """A config value broke a rule. `path` is its source: the file, the env var or "flags"."""

    reason = "bad_config"


def _host_port(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536 and not any(c.isspace() for c in host):
        return None
    return "must be host:port"


def _check_hosts(value: str) -> str | None:
    hosts = value.split("/", 1)[0]  # kazoo allows a chroot suffix: "h:1,h:2/chroot"
    if value == "embedded" or all(_host_port(h) is None for h in hosts.split(",")):
        return None
    return "must be 'embedded' or host:port[,host:port...]"


def _check_root(value: str) -> str | None:
    if value.startswith("/") and value != "/" and "" not in value[1:].split("/"):
        return None
    return "must start with '/', not end with '/', and not be '/' alone"


def _is_job_role(name: str) -> bool:
    try:
        check_name(name, "role")
    except InvalidRequest:
        return False
    return True


def _check_role(value: str) -> str | None:
    kind, _, role = value.partition(":")
    if value == "admin" or (
        kind in ("operator", "monitor") and (role == "*" or _is_job_role(role))
    ):
        return None
    return "must be 'admin', 'operator:<role>' or 'monitor:<role>' (<role> a job role or '*')"


def _principals(value: Any) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """Accept the TOML shape (a list of tables) or the stored shape (tuples)."""
    if isinstance(value, Mapping):
        raise TypeError("auth_principals must be a sequence")
    return tuple(
        (p["name"], p["token_sha256"], tuple(p.get("roles", ())))
        if isinstance(p, Mapping)
        else (p[0], p[1], tuple(p[2]))
        for p in value
    )


_PRINCIPAL = {
    "name": Field(str, check=lambda v: None if v else "must not be empty", doc="who this is"),
    "token_sha256": Field(
        str,
        check=lambda v: None if _HEX64.fullmatch(v) else "must be 64 lowercase hex characters",
        doc="SHA-256 of the bearer token, hex",
    ),
    "roles": Field(
        list,
        [],
        items=Field(str, check=_check_role),
        doc="admin, operator:<role>, monitor:<role>; <role> is a job role or '*'",
    ),
}


def _key(dotted: str, default: Any, doc: str, field: Field | None = None, **rules: Any) -> Any:
    """A Config field that is also a config key (see KEYS)."""
    spec = (
        attrs.evolve(field, doc=doc) if field else Field(type(default), default, doc=doc, **rules)
    )
    converter = _principals if dotted == "auth.principals" else None
    return attrs.field(default=default, converter=converter, metadata={_META: (dotted, spec)})


def _nonempty(value: str) -> str | None:
    return None if value else "must not be empty"


@attrs.frozen
class Config:
    """Everything the scheduler reads from its environment, read once."""

    scheduler_id: str = _key(
        "scheduler.id",
        "",
        "this node's name; '' means <hostname>-<pid>",
        check=lambda v: "must not contain '/' or spaces" if re.search(r"[/\s]", v) else None,
    )
    state_dir: str = _key(
        "scheduler.state_dir", "var", "local state (logs, embedded ZooKeeper)", check=_nonempty
    )
    zk_hosts: str = _key(
        "zookeeper.hosts",
        "embedded",
        "'embedded' (run ZooKeeper as a child) or host:port,host:port",
        check=_check_hosts,
    )
    zk_root: str = _key(
        "zookeeper.root", "/pulsegate", "znode under which everything is stored", check=_check_root
    )
    zk_session_timeout_s: float = _key(
        "zookeeper.session_timeout_s", 10.0, "ZooKeeper session timeout", min=1, max=600
    )
    zk_embedded_port: int = _key(
        "zookeeper.embedded_port",
        2181,
        "client port of the embedded ZooKeeper (0 = a free port)",
        min=0,
        max=65535,
    )
    zk_embedded_data_dir: str = _key(
        "zookeeper.embedded_data_dir", "", "embedded ZooKeeper data ('' = <state_dir>/zookeeper)"
    )
    api_host: str = _key("api.host", "127.0.0.1", "Thrift API listen address", check=_nonempty)
    api_port: int = _key("api.port", 7070, "Thrift API port (0 = a free port)", min=0, max=65535)
    api_advertise: str = _key(
        "api.advertise",
        "",
        "host:port others use to reach this node ('' = host:actual port)",
        check=lambda v: _host_port(v) if v else None,
    )
    api_transport: str = _key(
        "api.transport", "buffered", "Thrift transport", choices=("buffered", "framed")
    )
    api_tls_cert: str = _key("api.tls_cert", "", "PEM certificate; set with tls_key for TLS")
    api_tls_key: str = _key("api.tls_key", "", "PEM private key; set with tls_cert for TLS")
    max_instances: int = _key(
        "api.max_instances", 10000, "largest instance count of a job", min=1, max=1_000_000
    )
    api_max_connections: int = _key(
        "api.max_connections",
        2000,
        "open API connections served at once; more are closed at accept",
        min=1,
        max=1_000_000,
    )
    api_max_connections_per_peer: int = _key(
        "api.max_connections_per_peer",
        200,
        "open API connections served at once from one IP address",
        min=1,
        max=1_000_000,
    )
    api_allow_unauthenticated: bool = _key(
        "api.allow_unauthenticated",
        False,
        "allow a non-loopback API or HTTP address with auth off (anyone reaching it runs code)",
    )
    http_host: str = _key(
        "http.host", "127.0.0.1", "metrics/health listen address", check=_nonempty
    )
    http_port: int = _key(
        "http.port", 7071, "metrics/health port (0 = a free port)", min=0, max=65535
    )
    driver: str = _key(
        "driver.kind",
        "local",
        "how instances are run: local processes, or simulated (sim, for tests)",
        choices=("sim", "local"),
    )
    sim_action_log: str = _key(
        "driver.sim_action_log", "", "JSON-lines log of every sim driver action ('' = none)"
    )
    history_keep: int = _key("history.keep", 10, "terminal updates kept per job", min=0)
    history_max_age_days: float = _key(
        "history.max_age_days",
        30.0,
        "terminal updates older than this are pruned",
        check=lambda v: None if v > 0 else "must be greater than 0",
    )
    prune_interval_s: float = _key(
        "history.prune_interval_s", 900.0, "how often history is pruned", min=1
    )
    log_level: str = _key(
        "log.level", "info", "log level", choices=("debug", "info", "warning", "error")
    )
    log_format: str = _key(
        "log.format",
        "auto",
        "log format: auto is console on a terminal, json otherwise",
        choices=("auto", "json", "console"),
    )
    auth_enabled: bool = _key("auth.enabled", False, "require a token for mutating calls")
    reads_require_auth: bool = _key(
        "auth.reads_require_auth", False, "require a token for reads too"
    )
    auth_principals: tuple[tuple[str, str, tuple[str, ...]], ...] = _key(
        "auth.principals",
        (),
        "who may call the API: [[auth.principals]] tables of name, token_sha256, roles",
        field=Field(list, [], items=_PRINCIPAL),
    )
    debug_session_file: str = _key(
        "debug.session_file",
        "",
        "TEST ONLY: write the ZooKeeper session id and password here on every new session",
    )

    @property
    def zk_embedded(self) -> bool:
        return self.zk_hosts == "embedded"

    @property
    def history_max_age_ms(self) -> int:
        return round(self.history_max_age_days * 86_400_000)

    @property
    def resolved_embedded_data_dir(self) -> str:
        return self.zk_embedded_data_dir or str(Path(self.state_dir) / "zookeeper")

    @staticmethod
    def describe() -> list[tuple[str, str, str]]:
        """(dotted key, default as TOML, doc) for every key, array-of-table fields included."""
        rows = []
        for key in KEYS.values():
            rows.append((key.dotted, _literal(key.field.default), key.field.doc))
            if isinstance(key.field.items, Mapping):
                for name, sub in key.field.items.items():
                    rows.append((f"{key.dotted}[].{name}", _literal(sub.default), sub.doc))
        return rows


@attrs.frozen
class Key:
    """One config key: its TOML name, its Config attribute and its rules."""

    dotted: str
    attr: str
    field: Field

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dotted.replace(".", "_").upper()


KEYS: dict[str, Key] = {
    a.metadata[_META][0]: Key(a.metadata[_META][0], a.name, a.metadata[_META][1])
    for a in attrs.fields(Config)
}
SCHEMA: dict[str, dict[str, Field]] = {}
for _k in KEYS.values():
    SCHEMA.setdefault(_k.dotted.split(".")[0], {})[_k.dotted.split(".")[1]] = _k.field
_BY_ENV = {k.env: k for k in KEYS.values()}
assert len(_BY_ENV) == len(KEYS), "two config keys map to one environment variable"


def _literal(value: Any) -> str:
    if value is REQUIRED:
        return "(required)"
    return json.dumps(value) if not isinstance(value, float) else repr(value)


@attrs.frozen
class _Origin:
    """Where a value came from, to name it in an error."""

    source: str  # the file's path, the env var's name, "flags" or "default"
    text: str = ""  # the file's text, to find lines

    def error(self, key: str, rule: str, hint: str = "") -> ConfigError:
        return ConfigError(self.source, key, locate(self.text, key), rule, hint)


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Config:
    """Build the Config: defaults, then the file, then `env` (os.environ when None), then
    `flags` (dotted keys to typed values; None means not given). Raises ConfigError."""
    values = {d: k.field.default for d, k in KEYS.items()}
    origins = dict.fromkeys(KEYS, _Origin("default"))
    if path is not None:
        try:
            data, text = load_toml(path)
            checked = check_table(data, SCHEMA, str(path), text)
        except TomlError as e:
            raise ConfigError(e.path, e.key, e.line, e.rule, e.hint) from None
        for dotted in KEYS:
            section, name = dotted.split(".")
            if name in data.get(section, {}):
                values[dotted] = checked[section][name]
                origins[dotted] = _Origin(str(path), text)
    environ = os.environ if env is None else env
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_KEYS:
            continue
        key = _BY_ENV.get(var)
        if key is None:
            close = difflib.get_close_matches(var, list(_BY_ENV), n=1)
            hint = f"did you mean {close[0]}?" if close else ""
            raise ConfigError(var, "", None, "unknown environment variable", hint)
        values[key.dotted] = _checked(key, _parse(key, environ[var], var), var)
        origins[key.dotted] = _Origin(var)
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        if dotted not in KEYS:
            close = difflib.get_close_matches(dotted, list(KEYS), n=1)
            hint = f"did you mean {close[0]}?" if close else ""
            raise ConfigError("flags", dotted, None, "unknown key", hint)
        key = KEYS[dotted]
        if isinstance(value, str) and key.field.type is not str:
            value = _parse(key, value, "flags")
        values[dotted] = _checked(key, value, "flags")
        origins[dotted] = _Origin("flags")
    _check_together(values, origins)
    if not values["scheduler.id"]:
        values["scheduler.id"] = f"{socket.gethostname()}-{os.getpid()}"
    return Config(**{KEYS[d].attr: v for d, v in values.items()})


def _parse(key: Key, raw: str, source: str) -> Any:
    """Text from the environment (or a string flag) to the key's type."""
    kind = key.field.type
    try:
        if kind is bool:
            if raw.strip().lower() in _TRUE + _FALSE:
                return raw.strip().lower() in _TRUE
            raise ValueError(raw)
        if kind is list:
            return json.loads(raw)
        return kind(raw.strip()) if kind in (int, float) else raw
    except ValueError:
        rule = {
            bool: "must be a boolean (1/0/true/false/yes/no)",
            int: "must be an integer",
            float: "must be a number",
            list: "must be a JSON array",
        }[kind]
        raise ConfigError(source, key.dotted, None, rule, f"got {raw!r}") from None


def _checked(key: Key, value: Any, source: str) -> Any:
    """The same rules as in the file, for one value from the environment or a flag."""
    section, name = key.dotted.split(".")
    try:
        return check_table({name: value}, {name: key.field}, source, "", section)[name]
    except TomlError as e:
        raise ConfigError(e.path, e.key, e.line, e.rule, e.hint) from None


def _check_together(values: dict[str, Any], origins: dict[str, _Origin]) -> None:
    """Rules across keys, reported at the key the user set."""
    cert, key = "api.tls_cert", "api.tls_key"
    if bool(values[cert]) != bool(values[key]):
        given, missing = (cert, key) if values[cert] else (key, cert)
        raise origins[given].error(given, f"must be set together with {missing}")
    names: set[str] = set()
    tokens: set[str] = set()
    for i, principal in enumerate(values["auth.principals"]):
        where = origins["auth.principals"]
        if principal["name"] in names:
            raise where.error(f"auth.principals[{i}].name", "duplicate principal name")
        if principal["token_sha256"] in tokens:
            raise where.error(f"auth.principals[{i}].token_sha256", "duplicate token")
        names.add(principal["name"])
        tokens.add(principal["token_sha256"])
