"""A Python client for pulsegate: finds the leader (through ZooKeeper or a list of schedulers),
retries `Unavailable` with backoff, and speaks in domain objects with keyword arguments.

    client = PulsegateClient("127.0.0.1:7070", token=os.environ.get("PULSEGATE_TOKEN"))
    key = client.start_update(job, config, 5, settings=Settings(heartbeat_timeout_ms=30_000))
    client.heartbeat(key)

Errors are the domain's (`updater.errors`): InvalidRequest, NotFound, UpdateConflict,
JobUpdating, AuthError, and Unavailable once retries are exhausted.

`start_update` is safe to retry: it tags the request with an id in its metadata, and a conflict
with an update carrying the same id (our own earlier attempt, whose answer was lost) is success.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from thriftpy2.rpc import make_client
from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TFramedTransportFactory, TTransportException

from api import convert, views
from api.idl import Service
from api.idl import pulsegate as t
from updater.driver import InstanceState
from updater.errors import (
    AuthError,
    InvalidRequest,
    JobUpdating,
    NotFound,
    PulsegateError,
    Unavailable,
    UpdateConflict,
)
from updater.job import Job
from updater.keys import JobKey, UpdateKey
from updater.record import REQUEST_ID, UpdateRequest
from updater.settings import Settings
from updater.status import UpdateStatus
from updater.storage import UpdateSummary
from updater.task import TaskConfig

T = TypeVar("T")
_LOST = (TTransportException, OSError, EOFError, ConnectionError)
FIRST_DELAY_S, MAX_DELAY_S = 0.1, 2.0
# (address or addresses, attempt n, of N, why the last one failed): called before each retry
RetryNotice = Callable[[str, int, int, str], None]


class Unreachable(Unavailable):
    """No scheduler answered at all (nothing listens, or the network is down), as opposed to a
    scheduler that answered "no leader yet"."""

    reason = "unreachable"


def address_problem(text: str) -> str | None:
    """Why `text` is not a usable HOST:PORT, or None if it is."""
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        return "needs a host and a port"
    if any(c.isspace() for c in host):
        return "has a space in the host"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return "needs a port from 1 to 65535"
    return None


def planned_retries(retry_for_s: float) -> int:
    """How many retries the backoff (FIRST_DELAY_S doubling to MAX_DELAY_S) fits in
    `retry_for_s`: the N in "retrying (n/N)"."""
    delay, spent, count = FIRST_DELAY_S, 0.0, 0
    while spent + delay <= retry_for_s:
        spent, count = spent + delay, count + 1
        delay = min(MAX_DELAY_S, delay * 2)
    return count


def _why(error: BaseException) -> str:
    """A lost connection in words ("connection refused"), not a transport exception's repr."""
    for cause in (error, error.__context__, error.__cause__):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        if isinstance(cause, TimeoutError):
            return "timed out"
    if isinstance(error, TTransportException) and error.message:
        return str(error.message)
    return str(error) or type(error).__name__


class WaitTimeout(PulsegateError):
    """`wait` gave up: the update was still active when its timeout passed."""

    reason = "wait_timeout"


class ServerError(PulsegateError):
    """The server failed unexpectedly (a TApplicationException)."""

    reason = "server_error"


def _domain(error: Exception) -> Exception:
    """A Thrift exception from the server as the domain error it stands for."""
    if isinstance(error, t.InvalidRequest):
        field = error.field or "request"
        rule = error.message.removeprefix(f"{field}: ")
        return InvalidRequest(field, rule)
    if isinstance(error, t.NotFound):
        return NotFound(error.message)
    if isinstance(error, t.UpdateConflict):
        return UpdateConflict(error.message, views.update_key(error.activeKey))
    if isinstance(error, t.JobUpdating):
        return JobUpdating(error.message, views.update_key(error.activeKey))
    if isinstance(error, t.AuthError):
        return AuthError(error.message)
    if isinstance(error, t.Unavailable):
        return Unavailable(error.message)
    if isinstance(error, TApplicationException):
        return ServerError(f"server error: {error.message}")
    return error


class PulsegateClient:
    def __init__(
        self,
        hosts: str | Sequence[str] | None = None,
        *,
        zookeeper: str | None = None,
        zk_root: str = "/pulsegate",
        token: str | None = None,
        timeout_s: float = 10.0,
        retry_for_s: float = 30.0,
        transport: str = "buffered",
        tls_ca: str | None = None,
        follow_leader: bool = True,
        on_retry: RetryNotice | None = None,
    ) -> None:
        """`follow_leader` False keeps the client on the scheduler it reached first, letting
        that one forward to the leader (one more hop, but one fixed address). `on_retry` hears
        about every retry (the CLI prints them, so a wait is never silent)."""
        if isinstance(hosts, str):
            hosts = [h.strip() for h in hosts.split(",") if h.strip()]
        self.hosts = list(hosts or ([] if zookeeper else ["127.0.0.1:7070"]))
        self.zookeeper = zookeeper
        self.zk_root = zk_root
        self.token = token
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.transport = transport
        self.tls_ca = tls_ca
        self.follow_leader = follow_leader
        self.on_retry = on_retry
        self.address: str | None = None
        self._client: Any = None
        self._lock = threading.RLock()

    # -- connection ------------------------------------------------------------------------------

    def _connect(self, address: str) -> Any:
        host, _, port = address.rpartition(":")
        kwargs: dict[str, Any] = {"timeout": int(self.timeout_s * 1000)}
        if self.transport == "framed":
            kwargs["trans_factory"] = TFramedTransportFactory()
        if self.tls_ca:
            kwargs["cafile"] = self.tls_ca
        return make_client(Service, host, int(port), **kwargs)

    def _zk_leader(self) -> str | None:
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=self.zookeeper, timeout=self.timeout_s)
        try:
            zk.start(timeout=self.timeout_s)
            data, _ = zk.get(f"{self.zk_root}/leader")
            return str(json.loads(data)["api"])
        except Exception:
            return None
        finally:
            zk.stop()
            zk.close()

    def _discover(self) -> None:
        """Connect to the leader if it can be found, else to any scheduler that answers (any
        scheduler accepts any call)."""
        self.close()
        candidates = list(self.hosts)
        random.shuffle(candidates)
        if self.zookeeper:
            leader = self._zk_leader()
            if leader:
                candidates.insert(0, leader)
        errors = []
        for address in candidates:
            try:
                client = self._connect(address)
            except _LOST as e:
                errors.append(f"{address} ({_why(e)})")
                continue
            try:
                info = client.getSchedulerInfo()
            except (*_LOST, TApplicationException) as e:
                client.close()
                errors.append(f"{address} ({_why(e)})")
                continue
            leader = info.leaderAddress
            if self.follow_leader and leader and leader != address and not info.serving:
                try:
                    leader_client = self._connect(leader)
                    client.close()
                    client, address = leader_client, leader
                except _LOST:
                    pass  # the follower will forward
            self._client, self.address = client, address
            return
        where = "; ".join(errors) or "none configured"
        if self.zookeeper and not self.hosts:
            where = f"the leader named in ZooKeeper {self.zookeeper} ({where})"
        raise Unreachable(f"no scheduler reachable at {where}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self.address = None

    def __enter__(self) -> PulsegateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, *args: Any, done_if: Callable[[Exception], bool] | None = None
    ) -> Any:
        """Call with retries: a lost connection or Unavailable is retried with backoff (capped at
        2 s) until `retry_for_s` has passed, rediscovering the leader each time. An attempt that
        failed that way may still have been applied: if a later attempt then fails with an error
        that `done_if` recognises (the job already exists, is already gone), the call is done."""
        deadline = time.monotonic() + self.retry_for_s
        delay = FIRST_DELAY_S
        planned, attempt = planned_retries(self.retry_for_s), 0
        retried = False
        while True:
            error: Exception | None = None
            with self._lock:
                try:
                    if self._client is None:
                        self._discover()
                    return getattr(self._client, method)(*args)
                except _LOST as e:
                    where = self.address or ",".join(self.hosts)
                    self.close()
                    last: Exception = Unavailable(f"connection to {where} lost ({_why(e)})")
                except t.Unavailable as e:
                    self.close()
                    last = _domain(e)
                except Unavailable as e:
                    last = e
                except Exception as e:
                    error = _domain(e)
            if error is not None:  # outside the lock: done_if may call the scheduler itself
                if retried and done_if is not None and done_if(error):
                    return None
                raise error
            if attempt >= planned or time.monotonic() + delay > deadline:
                raise last
            attempt += 1
            if self.on_retry is not None:
                where = ",".join(self.hosts) or f"ZooKeeper {self.zookeeper}"
                why = last.message if isinstance(last, PulsegateError) else str(last)
                self.on_retry(where, attempt, planned, why)
            retried = True
            time.sleep(delay)
            delay = min(MAX_DELAY_S, delay * 2)

    def _auth(self, monitor: str | None = None) -> Any:
        if self.token is None and monitor is None:
            return None
        return t.Credentials(token=self.token, monitor=monitor)

    # -- updates ---------------------------------------------------------------------------------

    def start_update(
        self,
        job: JobKey,
        config: TaskConfig,
        instance_count: int,
        *,
        settings: Settings | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        message: str = "",
    ) -> UpdateKey:
        request_id = uuid.uuid4().hex
        request = UpdateRequest(
            job,
            config,
            instance_count,
            settings or Settings(),
            (*tuple(metadata), (REQUEST_ID, request_id)),
        )
        # The leader answers a retry carrying the same request id with the first attempt's key.
        key = self._call("startJobUpdate", convert.request_out(request), message, self._auth())
        return views.update_key(key)

    def pause(self, key: UpdateKey, message: str = "", monitor: str | None = None) -> None:
        """`monitor`: the pausing health monitor's name, recorded with the pause."""
        auth = self._auth(monitor)
        self._call("pauseJobUpdate", convert.update_key_out(key), message, auth)

    def resume(self, key: UpdateKey, message: str = "") -> None:
        self._call("resumeJobUpdate", convert.update_key_out(key), message, self._auth())

    def abort(self, key: UpdateKey, message: str = "") -> None:
        self._call("abortJobUpdate", convert.update_key_out(key), message, self._auth())

    def rollback(self, key: UpdateKey, message: str = "") -> None:
        self._call("rollbackJobUpdate", convert.update_key_out(key), message, self._auth())

    def heartbeat(
        self, key: UpdateKey, monitor: str | None = None, ack: int | None = None
    ) -> views.HeartbeatResult:
        """A heartbeat; naming `monitor` (or acking batch `ack`) sends HeartbeatDetails, and
        the answer then carries the batch to verify and the gate's state."""
        wire = convert.update_key_out(key)
        if monitor is None and ack is None:
            return views.heartbeat(self._call("heartbeatJobUpdate", wire, self._auth()))
        details = t.HeartbeatDetails(monitor=monitor, ackBatch=ack)
        return views.heartbeat(self._call("heartbeatJobUpdate", wire, self._auth(), details))

    def summaries(
        self,
        *,
        role: str | None = None,
        job: JobKey | None = None,
        key: UpdateKey | None = None,
        user: str | None = None,
        statuses: Iterable[UpdateStatus] = (),
        offset: int = 0,
        limit: int = 0,
    ) -> list[UpdateSummary]:
        query = t.JobUpdateQuery(
            role=role,
            jobKey=None if job is None else convert.job_key_out(job),
            key=None if key is None else convert.update_key_out(key),
            user=user,
            updateStatuses={s.value for s in statuses} or None,
            offset=offset,
            limit=limit,
        )
        return [views.summary(s) for s in self._call("getJobUpdateSummaries", query, self._auth())]

    def details(self, key: UpdateKey) -> views.UpdateDetails:
        return views.details(
            self._call("getJobUpdateDetails", convert.update_key_out(key), self._auth())
        )

    def diff(
        self,
        job: JobKey,
        config: TaskConfig,
        instance_count: int,
        *,
        settings: Settings | None = None,
    ) -> views.DiffView:
        request = UpdateRequest(job, config, instance_count, settings or Settings())
        return views.diff(
            self._call("getJobUpdateDiff", convert.request_out(request), self._auth())
        )

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(self, job: JobKey, config: TaskConfig, instance_count: int) -> None:
        value = t.JobConfiguration(
            key=convert.job_key_out(job),
            taskConfig=convert.task_out(config),
            instanceCount=instance_count,
        )
        self._call(
            "createJob",
            value,
            self._auth(),
            done_if=lambda e: (
                isinstance(e, InvalidRequest)
                and e.field == "config.key"
                and self._has_job(job, config, instance_count)
            ),
        )

    def _has_job(self, job: JobKey, config: TaskConfig, instance_count: int) -> bool:
        try:
            return self.get_job(job).instances() == dict.fromkeys(range(instance_count), config)
        except NotFound:
            return False

    def get_job(self, job: JobKey) -> Job:
        return views.job(self._call("getJob", convert.job_key_out(job), self._auth()))

    def list_jobs(self, role: str = "") -> list[JobKey]:
        return [views.job_key(k) for k in self._call("listJobs", role, self._auth())]

    def instances(self, job: JobKey) -> list[views.InstanceStatus]:
        found = self._call("getInstances", convert.job_key_out(job), self._auth())
        return [views.instance(i) for i in found]

    def is_settled(self, job: JobKey, count: int) -> bool:
        """Does `job` run exactly `count` instances, each healthy at its desired config?"""
        found = self.instances(job)
        return len(found) == count and all(
            i.state is InstanceState.HEALTHY and i.at_desired_config for i in found
        )

    def has_instances(self, job: JobKey) -> bool:
        """Does anything of `job` still run (also after the job was killed)?"""
        try:
            return bool(self.instances(job))
        except NotFound:
            return False

    def kill_job(self, job: JobKey, message: str = "") -> None:
        self._call(
            "killJob",
            convert.job_key_out(job),
            message,
            self._auth(),
            done_if=lambda e: isinstance(e, NotFound),
        )

    # -- cluster -----------------------------------------------------------------------------------

    def info(self) -> views.SchedulerInfo:
        return views.info(self._call("getSchedulerInfo"))

    def ping(self) -> None:
        self._call("ping")

    def wait(
        self,
        key: UpdateKey,
        on_change: Callable[[views.UpdateDetails], None] = lambda d: None,
        interval_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> views.UpdateDetails:
        """Poll until the update is terminal, calling `on_change` with the details after every
        poll (callers that only want changes compare them)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            found = self.details(key)
            on_change(found)
            if found.status.is_terminal:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"update {key} still {found.status.name} after {timeout_s:g} s")
            time.sleep(interval_s)
