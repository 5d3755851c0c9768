"""The web UI's routes on the scheduler's HTTP port (handed to `scheduler.http.HttpServer` as its
`pages`). Every read and action calls the Thrift handler in-process, so the UI gets the same
validation, authorization and follower-to-leader forwarding as any API client.

Routes: `/` (updates, active first, and jobs), `/updates/<role>/<env>/<name>/<id>`,
`/jobs/<role>/<env>/<name>`, `/static/<file>`; `?fragment=1` answers a page's live part only
(the page script re-fetches it). Actions are `POST /updates/.../<id>/<verb>` with a JSON body
`{"message": ...}`, the header `X-Pulsegate-Action: 1` (a cross-site form can send neither, so
this is the CSRF guard) and the token, when auth is on, as `Authorization: Bearer <token>`.

Threads: HTTP worker threads call `respond`; the Jinja2 environment and the handler are safe
to share."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

import jinja2
import structlog
from thriftpy2.thrift import TApplicationException, TException

from api import convert, views
from api.handler import Handler
from api.idl import pulsegate as t
from api.ui import model
from api.ui.gate import gate_view
from api.ui.processes import Processes
from scheduler.clock import Clock, SystemClock
from scheduler.http import Request, Response
from updater.keys import JobKey, UpdateKey
from updater.ranges import format_ranges

log = structlog.get_logger(__name__)

ACTION_HEADER = "x-pulsegate-action"
MAX_LISTED_ACTIVE = 50  # active updates whose why-line the list shows (one read each)
_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
# Thrift exception → HTTP status; anything else the handler raises is a 500.
_CODES: dict[type, int] = {
    t.InvalidRequest: 400,
    t.AuthError: 403,
    t.NotFound: 404,
    t.UpdateConflict: 409,
    t.JobUpdating: 409,
    t.Unavailable: 503,
}


class PageError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _api_error(e: TException) -> PageError:
    code = next((c for kind, c in _CODES.items() if isinstance(e, kind)), 500)
    message = getattr(e, "message", None) or str(e) or type(e).__name__
    if isinstance(e, TApplicationException):
        message = e.message or "internal error"
    return PageError(code, str(message))


class WebUI:
    def __init__(self, handler: Handler, clock: Clock | None = None) -> None:
        self.handler = handler
        self.clock = clock or SystemClock()
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("api.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            duration=model.duration, clock=model.clock_time, ago=model.ago, ranges=format_ranges
        )
        self.env.globals.update(update_url=update_url, job_url=job_url)
        self.static = _load_static()
        self.processes = Processes(handler.scheduler, self.clock)

    # -- dispatch --------------------------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        parts = [unquote(p) for p in request.path.split("/") if p]
        try:
            if request.method == "POST":
                return self._action(request, parts)
            if parts[:1] == ["static"] and len(parts) == 2:
                return self._static(parts[1])
            page = self._route(parts)
            if page is None:
                raise PageError(404, f"nothing here: {request.path}")
            template, build = page
            context = self._base(request) | build(self._credentials(request))
            return self._html(200, template, context, request)
        except PageError as e:
            if e.code >= 500:
                log.warning("ui_page_failed", path=request.path, code=e.code, error=e.message)
            if request.method == "POST":
                return _json(e.code, {"error": e.message})
            return self._html(e.code, "error", self._base(request) | {"error": e}, request)

    def _route(self, parts: list[str]) -> tuple[str, Callable[[Any], dict[str, Any]]] | None:
        if not parts:
            return "index", self._index
        if parts[0] == "updates" and len(parts) == 5:
            key = _update_key(parts[1:])
            return "update", lambda creds: self._update(key, creds)
        if parts[0] == "jobs" and len(parts) == 4:
            job = t.JobKey(role=parts[1], environment=parts[2], name=parts[3])
            return "job", lambda creds: self._job(job, creds)
        return None

    def _base(self, request: Request) -> dict[str, Any]:
        scheduler = self.handler.scheduler
        return {
            "auth_enabled": self.handler.auth.enabled,
            "scheduler_id": scheduler.config.scheduler_id,
            "role": scheduler.leadership.role.value if scheduler.leadership else "starting",
            "path": request.path,
            "now": self.clock.now(),
            "refresh_ms": 2000,  # an update page refreshes faster (heartbeat ages move)
        }

    @staticmethod
    def _credentials(request: Request) -> Any:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return t.Credentials(token=token.strip())

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.handler, method)(*args)
        except TException as e:
            raise _api_error(e) from None

    # -- pages -----------------------------------------------------------------------------------

    def _index(self, creds: Any) -> dict[str, Any]:
        raw = self._call("getJobUpdateSummaries", t.JobUpdateQuery(), creds)
        summaries = model.ordered(views.summary(s) for s in raw)
        jobs = sorted(views.job_key(k) for k in self._call("listJobs", None, creds))
        active = {s.key.job: s.key for s in summaries if s.status.is_active}
        return {
            "summaries": summaries[:200],
            "jobs": jobs,
            "active": active,
            "states": self._states(list(active.values())[:MAX_LISTED_ACTIVE], creds),
            "final": False,
        }

    def _states(self, keys: list[UpdateKey], creds: Any) -> dict[UpdateKey, Any]:
        """Why-line and progress of the active updates the list shows; one that cannot be read
        right now is listed without them."""
        now = self.clock.now()
        out: dict[UpdateKey, Any] = {}
        for key in keys:
            try:
                d = views.details(
                    self._call("getJobUpdateDetails", convert.update_key_out(key), creds)
                )
            except PageError:
                continue
            out[key] = (model.why(d, now), d.progress)
        return out

    def _update(self, key: Any, creds: Any) -> dict[str, Any]:
        details = views.details(self._call("getJobUpdateDetails", key, creds))
        now = self.clock.now()
        instances, instances_error = self._instances(key.job, creds)
        return {
            "d": details,
            "key": details.record.key,
            "why": model.why(details, now),
            "pulse": model.pulse(details),
            "gate": gate_view(details, now),
            "cells": model.grid(details, instances, now, self.processes.of(details.record.key.job)),
            "instances_error": instances_error,
            "timeline": model.timeline(details),
            "settings": model.settings_rows(details.record.definition.settings),
            "metadata": model.metadata_rows(details),
            "allowed": model.allowed_actions(details),
            "actions": model.ACTIONS,
            "final": not details.status.is_active,
            "refresh_ms": 1000,
        }

    def _job(self, job: Any, creds: Any) -> dict[str, Any]:
        try:
            config = views.job(self._call("getJob", job, creds))
        except PageError as e:
            if e.code != 404:
                raise
            config = None  # killed: its instances show until they are gone
        instances, instances_error = self._instances(job, creds)
        if config is None and not instances:
            raise PageError(404, f"job {job.role}/{job.environment}/{job.name} does not exist")
        query = t.JobUpdateQuery(jobKey=job)
        summaries = model.ordered(
            views.summary(s) for s in self._call("getJobUpdateSummaries", query, creds)
        )
        processes = self.processes.of(views.job_key(job))
        rows = []
        for i, raw in instances or ():
            process = processes.get(i.instance_id)
            host, pid = model.host_pid(i, raw, process)
            rows.append((i, host, pid, process.log if process else ""))
        return {
            "job": views.job_key(job),
            "config": config,
            "rows": rows,
            "instances_error": instances_error,
            "summaries": summaries[:50],
            "final": False,
        }

    def _instances(
        self, job: Any, creds: Any
    ) -> tuple[list[tuple[views.InstanceStatus, Any]] | None, str]:
        """The job's instances, or None and why not (an update page still shows without them)."""
        try:
            raw = self._call("getInstances", job, creds)
        except PageError as e:
            if e.code in (400, 403):
                raise
            return None, e.message
        return [(views.instance(i), i) for i in raw], ""

    # -- actions ---------------------------------------------------------------------------------

    def _action(self, request: Request, parts: list[str]) -> Response:
        if parts[:1] != ["updates"] or len(parts) != 6 or parts[5] not in model.ACTIONS:
            raise PageError(404, f"no such action: {request.path}")
        if request.headers.get(ACTION_HEADER) != "1":
            raise PageError(403, f"an action needs the header {ACTION_HEADER.title()}: 1")
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise PageError(415, "an action's body must be JSON (Content-Type: application/json)")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise PageError(400, "the body is not valid JSON") from None
        message = body.get("message", "") if isinstance(body, dict) else None
        if not isinstance(message, str):
            raise PageError(400, 'the body must be {"message": "<why>"}')
        key = _update_key(parts[1:5])
        verb = parts[5]
        bound = log.bind(update=f"{parts[1]}/{parts[2]}/{parts[3]}/{parts[4]}", action=verb)
        try:
            self._call(f"{verb}JobUpdate", key, message, self._credentials(request))
        except PageError as e:
            bound.info("ui_action_refused", code=e.code, error=e.message)
            raise
        details = views.details(self._call("getJobUpdateDetails", key, self._credentials(request)))
        bound.info("ui_action_done", status=details.status.name)
        return _json(200, {"ok": True, "status": details.status.name})

    # -- responses -------------------------------------------------------------------------------

    def _html(self, code: int, page: str, context: dict[str, Any], request: Request) -> Response:
        """The whole page, or with `?fragment=1` its live part only (what the script swaps in)."""
        fragment = request.query.get("fragment") == ["1"]
        template = f"{page}_body.html" if fragment else f"{page}.html"
        body = self.env.get_template(template).render(context).encode()
        return Response(code, "text/html; charset=utf-8", body, _HEADERS)

    def _static(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            raise PageError(404, f"no such file: /static/{name}")
        content_type, body = found
        return Response(200, content_type, body, _HEADERS)


def _update_key(parts: list[str]) -> Any:
    return t.JobUpdateKey(
        job=t.JobKey(role=parts[0], environment=parts[1], name=parts[2]), id=parts[3]
    )


def _json(code: int, body: object) -> Response:
    return Response(code, "application/json", json.dumps(body).encode(), _HEADERS)


def _load_static() -> dict[str, tuple[str, bytes]]:
    """Every file shipped under api/ui/static, read once: only these names are served."""
    out = {}
    for entry in resources.files("api.ui").joinpath("static").iterdir():
        if entry.is_file():
            kind = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            out[entry.name] = (kind, entry.read_bytes())
    return out


def job_url(job: JobKey) -> str:
    return "/jobs/" + "/".join(quote(p, safe="") for p in (job.role, job.environment, job.name))


def update_url(key: UpdateKey) -> str:
    """The update page's path: `pulsegate update start` prints it after the HTTP address."""
    return "/updates/" + job_url(key.job).removeprefix("/jobs/") + "/" + quote(key.id, safe="")
