"""Who may call what (DESIGN §7). Tokens are stored as SHA-256 hex digests in the config and
compared in constant time; a principal's roles are `admin`, `operator:<job role>` and
`monitor:<job role>` (`*` for every job role).

- admin: everything;
- operator: start, pause, resume, abort and rollback updates, create and kill jobs;
- monitor: heartbeat and pause;
- reads are open unless `auth.reads_require_auth`, then any known principal may read.

With auth off every call is allowed and events record the user as `AUTH_OFF_USER`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable

import attrs

from updater.errors import AuthError
from updater.keys import JobKey

AUTH_OFF_USER = "anonymous (auth off)"


class Action(enum.Enum):
    READ = "read"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"
    HEARTBEAT = "heartbeat"
    CREATE_JOB = "create_job"
    KILL_JOB = "kill_job"


OPERATOR_ACTIONS = frozenset(
    {
        Action.START,
        Action.PAUSE,
        Action.RESUME,
        Action.ABORT,
        Action.ROLLBACK,
        Action.CREATE_JOB,
        Action.KILL_JOB,
    }
)
MONITOR_ACTIONS = frozenset({Action.HEARTBEAT, Action.PAUSE})


@attrs.frozen
class Principal:
    name: str
    token_sha256: str
    roles: tuple[str, ...]

    def may(self, action: Action, job: JobKey | None) -> bool:
        for role in self.roles:
            if role == "admin":
                return True
            kind, _, scope = role.partition(":")
            if job is not None and scope not in ("*", job.role):
                continue
            if job is None and scope != "*":
                continue
            if kind == "operator" and action in OPERATOR_ACTIONS:
                return True
            if kind == "monitor" and action in MONITOR_ACTIONS:
                return True
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(
        self,
        enabled: bool,
        principals: Iterable[tuple[str, str, tuple[str, ...]]] = (),
        reads_require_auth: bool = False,
    ) -> None:
        self.enabled = enabled
        self.reads_require_auth = reads_require_auth
        self.principals = [Principal(n, h.lower(), tuple(r)) for n, h, r in principals]
        self._known: dict[str, Principal] = {}

    def identify(self, token: str | None) -> Principal | None:
        """The principal holding `token`, comparing against every stored digest in constant
        time (no early exit, so timing does not reveal which one matched). Known tokens are
        remembered, so a monitor's heartbeats are not hashed each time; that lookup compares
        strings only after a full match of Python's keyed (per-process random) string hash, so
        its timing says nothing about how much of a guessed token is right."""
        if not token:
            return None
        known = self._known.get(token)
        if known is not None:
            return known
        digest = hash_token(token)
        found = None
        for principal in self.principals:
            if hmac.compare_digest(digest, principal.token_sha256):
                found = principal
        if found is not None:
            if len(self._known) >= 4096:
                self._known.clear()
            self._known[token] = found
        return found

    def check(self, token: str | None, action: Action, job: JobKey | None) -> str:
        """The user name to record, or AuthError."""
        if not self.enabled:
            return AUTH_OFF_USER
        if action is Action.READ and not self.reads_require_auth:
            principal = self.identify(token)
            return principal.name if principal else "anonymous"
        principal = self.identify(token)
        if principal is None:
            raise AuthError("a valid token is required" if token else "no token given")
        if action is Action.READ or principal.may(action, job):
            return principal.name
        what = f"jobs of role {job.role}" if job else "this"
        raise AuthError(f"{principal.name} may not {action.value.replace('_', ' ')} {what}")
