"""The Thrift handler: validate and convert the input, authorize, then delegate to the leader
loop (mutations, heartbeats), to storage (reads), or, on a follower, forward to the leader.

Domain errors become Thrift exceptions through one table; an error a method does not declare
becomes a TApplicationException, so a connection is never dropped because of a bug."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog
from thriftpy2.thrift import TApplicationException

from api import checks, convert, convert_gate
from api.auth import AUTH_OFF_USER, Action, Authenticator
from api.forward import Forwarder
from api.idl import Service
from api.idl import pulsegate as t
from scheduler import commands
from scheduler.codec import CorruptValue
from scheduler.version import VERSION
from updater.diff import diff_job
from updater.engine import UpdateRun
from updater.errors import (
    AlreadyExists,
    AuthError,
    InvalidRequest,
    JobUpdating,
    NoopUpdate,
    NotFound,
    PulsegateError,
    StaleWrite,
    TransitionError,
    Unavailable,
    UpdateConflict,
    ValueTooLarge,
)
from updater.gate import GateState, gate_state
from updater.keys import JobKey, UpdateKey
from updater.pulse import ANONYMOUS, HeartbeatAnswer
from updater.ranges import merge
from updater.record import UpdateRequest, validate_request
from updater.status import UpdateStatus
from updater.task import validate_task

if TYPE_CHECKING:
    from scheduler.service import Scheduler

log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _leader_address(e: Exception) -> str | None:
    return getattr(e, "leader_address", None)


# Domain error → Thrift exception. First match wins (subclasses before their bases).
ERRORS: list[tuple[type[Exception], Callable[[Any], Any]]] = [
    (InvalidRequest, lambda e: t.InvalidRequest(message=e.message, field=e.field)),
    (TransitionError, lambda e: t.InvalidRequest(message=e.message, field="key")),
    (NoopUpdate, lambda e: t.InvalidRequest(message=e.message, field="request")),
    (ValueTooLarge, lambda e: t.InvalidRequest(message=e.message, field="request")),
    (AlreadyExists, lambda e: t.InvalidRequest(message=e.message, field="config.key")),
    (NotFound, lambda e: t.NotFound(message=e.message)),
    (
        UpdateConflict,
        lambda e: t.UpdateConflict(message=e.message, activeKey=convert.update_key_out(e.active)),
    ),
    (
        JobUpdating,
        lambda e: t.JobUpdating(message=e.message, activeKey=convert.update_key_out(e.active)),
    ),
    (AuthError, lambda e: t.AuthError(message=e.message)),
    (StaleWrite, lambda e: t.Unavailable(message=f"{e.message}; retry")),
    (
        Unavailable,
        lambda e: t.Unavailable(message=e.message, leaderAddress=_leader_address(e)),
    ),
]


def _declared(method: str) -> tuple[type, ...]:
    spec = getattr(Service, f"{method}_result").thrift_spec
    return tuple(v[2] for v in spec.values() if v[1] != "success")


_HEARTBEAT_ERRORS = _declared("heartbeatJobUpdate")


def to_thrift(error: Exception, declared: tuple[type, ...]) -> Exception:
    for kind, make in ERRORS:
        if isinstance(error, kind):
            mapped = make(error)
            if isinstance(mapped, declared):
                return cast(Exception, mapped)
            break
    message = error.message if isinstance(error, PulsegateError) else "internal error"
    return TApplicationException(TApplicationException.INTERNAL_ERROR, message)


def failed(handler: Handler, name: str, declared: tuple[type, ...], error: Exception) -> Exception:
    """What an RPC that raised `error` answers, counted: every method, the heartbeat fast path
    included, fails through here, so a failure is a Thrift exception and never a dropped
    connection."""
    if isinstance(error, declared):  # already a Thrift exception (forwarded from the leader)
        handler.metrics.api_request(name, type(error).__name__)
        return error
    if isinstance(error, (PulsegateError, CorruptValue)):
        handler.metrics.api_request(name, error.reason)
    else:
        log.error("rpc_failed", method=name, exc_info=error)
        handler.metrics.api_request(name, "internal")
    return to_thrift(error, declared)


def rpc(fn: F, method: str = "") -> F:
    """Map errors and count requests for one RPC method (named after `fn` by default)."""
    name = method or fn.__name__
    declared = _declared(name) if name != "ping" else ()

    @functools.wraps(fn)
    def wrapper(self: Handler, *args: Any) -> Any:
        try:
            result = fn(self, *args)
        except Exception as e:
            raise failed(self, name, declared, e) from None
        self.metrics.api_request(name, "ok")
        return result

    return wrapper  # type: ignore[return-value]


class Handler:
    def __init__(self, scheduler: Scheduler, auth: Authenticator, forwarder: Forwarder) -> None:
        self.scheduler = scheduler
        self.auth = auth
        self.forwarder = forwarder
        self.metrics = scheduler.metrics
        self._leader_cache: tuple[float, dict[str, Any] | None] = (0.0, None)
        # Built once, so the heartbeat path allocates nothing and looks up no label.
        self._beats = {
            a: self.metrics.heartbeats_total.labels(answer=a.name).inc for a in HeartbeatAnswer
        }
        self._results = {
            (a, s): t.HeartbeatResult(status=a.value, updateStatus=s.value)
            for a in HeartbeatAnswer
            for s in UpdateStatus
        }

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def loop(self) -> Any:
        if self.scheduler.loop is None:
            raise Unavailable("the scheduler is starting")
        return self.scheduler.loop

    @property
    def store(self) -> Any:
        if self.scheduler.store is None:
            raise Unavailable("the scheduler is starting")
        return self.scheduler.store

    def _leader(self) -> dict[str, Any] | None:
        """The serving leader's identity, cached for a second (it is read from ZooKeeper)."""
        at, found = self._leader_cache
        if time.monotonic() - at < 1.0:
            return found
        leadership = self.scheduler.leadership
        found = leadership.leader_identity() if leadership is not None else None
        self._leader_cache = (time.monotonic(), found)
        return found

    def _elsewhere(self, method: str, *args: Any) -> tuple[bool, Any]:
        """(False, None) if this scheduler serves as leader; otherwise forward to the leader
        and return (True, its answer)."""
        if self.scheduler.loop is not None and self.scheduler.loop.is_serving:
            return False, None
        leader = self._leader()
        me = self.scheduler.config.scheduler_id
        if leader is None or not leader.get("serving") or leader.get("id") == me:
            error = Unavailable("no leader is serving right now; retry")
            error.leader_address = leader.get("api") if leader else None  # type: ignore[attr-defined]
            raise error
        return True, self.forwarder.call(leader["api"], method, *args)

    def _validate(self, request: UpdateRequest) -> None:
        try:
            validate_request(request, self.scheduler.config.max_instances)
        except InvalidRequest as e:
            raise checks.renamed(e, "request") from None

    @staticmethod
    def _token(auth: Any) -> str | None:
        if auth is None:
            return None
        checks.need(auth, "auth", t.Credentials)
        if auth.token is None:
            return None
        return checks.text(auth.token, "auth.token", 4096)

    def _user(self, auth: Any, action: Action, job: JobKey | None) -> str:
        """Who the call is recorded as: the principal (or the auth-off user), and the monitor's
        name when a health monitor calls, so that its pause is not taken for an operator's."""
        user = self.auth.check(self._token(auth), action, job)
        monitor = None if auth is None else auth.monitor
        if monitor is None:
            return user
        name = checks.text(monitor, "auth.monitor", 64)
        return f"monitor {name}" if user == AUTH_OFF_USER else f"{user} (monitor {name})"

    # -- updates -------------------------------------------------------------------------------

    @rpc
    def startJobUpdate(self, request: Any, message: Any, auth: Any) -> Any:
        req = convert.request_in(request)
        msg = checks.message(message)
        user = self._user(auth, Action.START, req.job)
        self._validate(req)
        forwarded, answer = self._elsewhere("startJobUpdate", request, message, auth)
        if forwarded:
            return answer
        return convert.update_key_out(commands.start_update(self.loop, req, user, msg))

    def _command(self, verb: str, action: Action, key: Any, message: Any, auth: Any) -> None:
        update = convert.update_key_in(key)
        msg = checks.message(message)
        user = self._user(auth, action, update.job)
        forwarded, _ = self._elsewhere(f"{verb}JobUpdate", key, message, auth)
        if not forwarded:
            commands.update_command(self.loop, update, verb, user, msg)

    @rpc
    def pauseJobUpdate(self, key: Any, message: Any, auth: Any) -> None:
        self._command("pause", Action.PAUSE, key, message, auth)

    @rpc
    def resumeJobUpdate(self, key: Any, message: Any, auth: Any) -> None:
        self._command("resume", Action.RESUME, key, message, auth)

    @rpc
    def abortJobUpdate(self, key: Any, message: Any, auth: Any) -> None:
        self._command("abort", Action.ABORT, key, message, auth)

    @rpc
    def rollbackJobUpdate(self, key: Any, message: Any, auth: Any) -> None:
        self._command("rollback", Action.ROLLBACK, key, message, auth)

    def heartbeatJobUpdate(self, key: Any, auth: Any, details: Any = None) -> Any:
        """The hot path (monitors call it constantly): for an update the leader is running, a
        tuple, a dict lookup and the pulse update; anything else takes the checked path. Both
        fail through the one error table (`failed`); a `try` costs nothing until it raises.
        The monitor is the one `details` names, else the principal, else anonymous (rule 11);
        a heartbeat with details is answered with the batch to verify and the gate."""
        try:
            loop = self.scheduler.loop
            try:
                job = key.job
                run = loop.hot.get((job.role, job.environment, job.name, key.id))  # type: ignore[union-attr]
            except (AttributeError, TypeError):
                run = None
            if run is None or not loop.is_serving or details is not None:  # type: ignore[union-attr]
                return self._heartbeat_checked(key, auth, details)
            user, monitor = AUTH_OFF_USER, ANONYMOUS
            if self.auth.enabled:
                user = monitor = self.auth.check(self._token(auth), Action.HEARTBEAT, run.key.job)
            answer, status = loop.beat(run, user, monitor)  # type: ignore[union-attr]
            self._beats[answer]()
            return self._results[answer, status]
        except Exception as e:
            raise failed(self, "heartbeatJobUpdate", _HEARTBEAT_ERRORS, e) from None

    def _heartbeat_checked(self, key: Any, auth: Any, details: Any) -> Any:
        update = convert.update_key_in(key)
        named, ack = convert_gate.heartbeat_details_in(details)
        user = self._user(auth, Action.HEARTBEAT, update.job)
        monitor = named or (user if self.auth.enabled else ANONYMOUS)
        loop = self.scheduler.loop
        if loop is None or not loop.is_serving:
            forwarded, answer = self._elsewhere("heartbeatJobUpdate", key, auth, details)
            if forwarded:
                self.metrics.api_request("heartbeatJobUpdate", "ok")
                return answer
        answer, status = self.loop.heartbeat(update, user, monitor, ack)
        self._beats[answer]()
        self.metrics.api_request("heartbeatJobUpdate", "ok")
        if details is None:
            return self._results[answer, status]
        return convert_gate.heartbeat_out(answer.value, status.value, self._gate(update))

    def _gate(self, key: UpdateKey) -> GateState | None:
        """The gate of an update this leader runs, read from its memory (as heartbeats are)."""
        loop = self.scheduler.loop
        run = loop.runs.get(key) if loop is not None and loop.is_serving else None
        if run is None:
            return None
        return gate_state(run, loop.pulse.get(key), loop.clock.now())  # type: ignore[union-attr]

    @rpc
    def getJobUpdateSummaries(self, query: Any, auth: Any = None) -> list[Any]:
        q = convert.query_in(query)
        self._user(auth, Action.READ, q.job)
        job = q.job or (q.key.job if q.key else None)
        return [convert.summary_out(s) for s in q.apply(self.store.summaries(job))]

    @rpc
    def getJobUpdateDetails(self, key: Any, auth: Any = None) -> Any:
        update = convert.update_key_in(key)
        self._user(auth, Action.READ, update.job)
        loop = self.scheduler.loop
        if loop is None or not loop.is_serving:
            try:
                forwarded, answer = self._elsewhere("getJobUpdateDetails", key, auth)
                if forwarded:
                    return answer
            except Unavailable:
                pass  # no leader: answer from storage, without the heartbeat age
        record = self.store.get_update(update)
        run = UpdateRun(record)
        age, gate = None, None
        if loop is not None and loop.is_serving and record.status.is_active:
            age = loop.heartbeat_age_ms(update)
            gate = self._gate(update)
        backward = run.backward is not None
        return convert.details_out(record, age, run.counts(), backward, gate)

    @rpc
    def getJobUpdateDiff(self, request: Any, auth: Any = None) -> Any:
        req = convert.request_in(request)
        self._user(auth, Action.READ, req.job)
        self._validate(req)
        job = self.store.get_job(req.job)
        current = job.instances() if job is not None else {}
        scope = merge(req.settings.update_only_these_instances)
        diff = diff_job(current, req.config, req.instance_count, scope)
        return convert.diff_out(diff, req.config, current)

    # -- jobs ----------------------------------------------------------------------------------

    @rpc
    def createJob(self, config: Any, auth: Any) -> None:
        job = convert.job_config_in(config)
        user = self._user(auth, Action.CREATE_JOB, job.key)
        checks.integer(
            job.instance_count, "config.instanceCount", 0, self.scheduler.config.max_instances
        )
        for group in job.groups:
            try:
                validate_task(group.config)
            except InvalidRequest as e:
                raise checks.renamed(e, "config") from None
        forwarded, _ = self._elsewhere("createJob", config, auth)
        if forwarded:
            return
        active = self.store.active_update(job.key)
        if active is not None:
            raise JobUpdating(f"job {job.key} has an active update {active}", active)
        commands.create_job(self.loop, job)
        log.info("job_create_requested", job=str(job.key), user=user)

    @rpc
    def getJob(self, key: Any, auth: Any = None) -> Any:
        job_key = convert.job_key_in(key, "key")
        self._user(auth, Action.READ, job_key)
        job = self.store.get_job(job_key)
        if job is None:
            raise NotFound(f"job {job_key} does not exist")
        return convert.job_out(job)

    @rpc
    def listJobs(self, role: Any, auth: Any = None) -> list[Any]:
        wanted = None if role in (None, "") else checks.text(role, "role", 64)
        self._user(auth, Action.READ, None)
        return [convert.job_key_out(k) for k in self.store.list_jobs(wanted)]

    @rpc
    def getInstances(self, key: Any, auth: Any = None) -> list[Any]:
        job_key = convert.job_key_in(key, "key")
        self._user(auth, Action.READ, job_key)
        forwarded, answer = self._elsewhere("getInstances", key, auth)
        if forwarded:
            return answer  # type: ignore[no-any-return]
        job = self.store.get_job(job_key)
        driver = self.scheduler.driver
        observed = dict(driver.instances(job_key)) if driver is not None else {}
        if job is None and not observed:  # a killed job's instances show until they are gone
            raise NotFound(f"job {job_key} does not exist")
        desired = job.instances() if job is not None else {}
        from updater.driver import InstanceState, ObservedInstance

        out = []
        for instance_id in sorted(set(desired) | set(observed)):
            seen = observed.get(instance_id) or ObservedInstance(instance_id, InstanceState.ABSENT)
            out.append(convert.instance_out(seen, desired.get(instance_id)))
        return out

    @rpc
    def killJob(self, key: Any, message: Any, auth: Any) -> None:
        job_key = convert.job_key_in(key, "key")
        msg = checks.message(message)
        user = self._user(auth, Action.KILL_JOB, job_key)
        forwarded, _ = self._elsewhere("killJob", key, message, auth)
        if not forwarded:
            commands.kill_job(self.loop, job_key, user, msg)

    # -- cluster -------------------------------------------------------------------------------

    @rpc
    def getSchedulerInfo(self) -> Any:
        s = self.scheduler
        serving = bool(s.loop is not None and s.loop.is_serving)
        if serving and s.http is not None:
            # The serving leader is this node: no ZooKeeper read (a blip there, or the cached
            # look-up of a second ago, must not make a serving leader report no leader).
            leader: dict[str, Any] | None = {
                "id": s.config.scheduler_id,
                "api": s.api_address,
                "http": f"{s.config.http_host}:{s.http.port}",
            }
        else:
            leader = self._leader() if s.client is not None and s.client.connected else None
        return t.SchedulerInfo(
            id=s.config.scheduler_id,
            version=VERSION,
            role=s.leadership.role.value if s.leadership else "starting",
            leaderId=leader.get("id") if leader else None,
            leaderAddress=leader.get("api") if leader else None,
            serving=serving,
            httpAddress=f"{s.config.http_host}:{s.http.port}" if s.http is not None else None,
            leaderHttpAddress=leader.get("http") if leader else None,
            instanceLogDir=str((Path(s.config.state_dir) / "logs").resolve())
            if s.config.driver == "local"
            else None,
        )

    def ping(self) -> None:
        return None
