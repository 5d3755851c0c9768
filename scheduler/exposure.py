"""Who can reach the scheduler, checked before it listens: with the local driver `createJob` runs
any command as the scheduler's user, so an API (or the UI on the HTTP port) reachable from other
machines with auth off lets anyone there run code here. Such a start is refused unless the
operator says so (`api.allow_unauthenticated`), and then it is logged as a warning at every start.

A wildcard API address (`0.0.0.0`, `::`) is refused without `api.advertise`: the address
published for followers and clients would be the wildcard, and they would connect to themselves."""

from __future__ import annotations

import ipaddress
import socket

import structlog

from scheduler.config import Config
from updater.errors import PulsegateError

log = structlog.get_logger(__name__)

WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class UnsafeExposure(PulsegateError):
    """The listen addresses and the auth settings, together, would expose the scheduler. The
    message names the key and the fix."""

    reason = "unsafe_exposure"


def _env(key: str) -> str:
    return "PULSEGATE_" + key.upper().replace(".", "_")


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host`: a loopback address, or a name resolving only to
    loopback addresses. A name that does not resolve counts as exposed (the bind then fails)."""
    if host in WILDCARDS:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
    )


def check_exposure(config: Config, with_api: bool = True) -> None:
    """Raise UnsafeExposure for a set-up that must not start; log the accepted risks."""
    if with_api and config.api_host in WILDCARDS and not config.api_advertise:
        raise UnsafeExposure(
            f"api.host = {config.api_host!r} listens on every address but tells others to "
            f"connect to {config.api_host!r}; set api.advertise (or {_env('api.advertise')}) "
            "to the host:port other nodes and clients use to reach this one"
        )
    listeners = [("http.host", config.http_host)]
    if with_api:
        listeners.insert(0, ("api.host", config.api_host))
    exposed = [(key, host) for key, host in listeners if not is_loopback(host)]
    if not exposed:
        return
    where = ", ".join(f"{key} = {host!r}" for key, host in exposed)
    if not config.auth_enabled:
        if not config.api_allow_unauthenticated:
            raise UnsafeExposure(
                f"{where} is reachable from other machines with auth off, so anyone there can "
                "run commands as this user; turn auth on ([auth] enabled = true with "
                "principals, see docs/security.md), listen on 127.0.0.1, or accept the risk "
                f"with api.allow_unauthenticated = true (or {_env('api.allow_unauthenticated')})"
            )
        log.warning(
            "unauthenticated_exposure_allowed",
            listeners=where,
            risk="anyone who reaches these addresses can run commands as this user",
            key="api.allow_unauthenticated",
        )
    if with_api and not config.api_tls_cert and any(k == "api.host" for k, _ in exposed):
        log.warning(
            "api_tls_off",
            listeners=where,
            risk="tokens and job configs cross the network in clear text",
            fix="set api.tls_cert and api.tls_key",
        )
