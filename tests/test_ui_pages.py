"""The web UI over plain HTTP against real in-process schedulers (sim driver): pages, live
fragments, escaping, 404s, actions through the handler's auth and validation, the CSRF guard,
and reads and actions on a follower. The browser tests are in test_ui_browser.py."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from api.auth import AUTH_OFF_USER, hash_token
from api.client import PulsegateClient
from api.ui import update_url
from scheduler.service import Scheduler
from updater.keys import JobKey, UpdateKey
from updater.settings import Settings
from updater.status import UpdateStatus as S
from updater.task import TaskConfig

from cluster import FAST_SIM, client_for, start_scheduler, wait_serving
from waiting import wait_until

JOB = JobKey("www", "prod", "web")
V1 = TaskConfig.make(["serve", "--version", "1"], labels=FAST_SIM)
V2 = TaskConfig.make(["serve", "--version", "2"], labels=FAST_SIM)
V3 = TaskConfig.make(["serve", "--version", "3"], labels=FAST_SIM)
OPERATOR_TOKEN = "op-secret-token"
ACTION = {"X-Pulsegate-Action": "1", "Content-Type": "application/json"}


def base(s: Scheduler) -> str:
    assert s.http is not None
    return f"http://127.0.0.1:{s.http.port}"


def get(s: Scheduler, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(base(s) + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def post(
    s: Scheduler, path: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        base(s) + path, data=data, headers=headers or {}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ready_job(client: PulsegateClient, count: int = 3) -> None:
    client.create_job(JOB, V1, count)
    wait_until(lambda: client.is_settled(JOB, count), 15, 0.02, "job did not settle")


def coordinated(client: PulsegateClient, config: TaskConfig = V2) -> UpdateKey:
    """An update that waits for its first heartbeat, so it stays put while a test looks."""
    settings = Settings(min_wait_in_instance_running_ms=100, heartbeat_timeout_ms=60_000)
    return client.start_update(JOB, config, 3, settings=settings, metadata=[("ticket", "OPS-1")])


@pytest.fixture
def client(scheduler: Scheduler):
    c = client_for(scheduler)
    yield c
    c.close()


def test_pages_show_updates_jobs_and_why(scheduler: Scheduler, client: PulsegateClient) -> None:
    ready_job(client)
    done = client.start_update(JOB, V2, 3, settings=Settings(min_wait_in_instance_running_ms=50))
    wait_until(lambda: client.details(done).status is S.ROLLED_FORWARD, 15, 0.02)
    key = coordinated(client, V3)

    code, html, headers = get(scheduler, "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    rows = re.findall(r'<a class="key" href="([^"]+)">', html)
    assert rows == [update_url(key), update_url(done)]  # active first
    assert '<a href="/jobs/www/prod/web">www/prod/web</a>' in html
    assert '<td class="why-cell why-waiting">waiting for the first heartbeat</td>' in html
    assert "<td>0/3</td>" in html  # the active update's progress

    code, html, _ = get(scheduler, update_url(key))
    assert code == 200
    assert 'id="status">ROLL_FORWARD_AWAITING_PULSE<' in html
    assert 'id="why">waiting for the first heartbeat<' in html
    assert "<dt>heartbeat_timeout_ms</dt><dd>60 s</dd>" in html
    assert "<dt>metadata ticket</dt><dd>OPS-1</dd>" in html
    assert "request_id" not in html  # the client's retry tag is noise
    assert html.count('class="cell state-healthy') == 3
    assert re.search(r'data-action="pause"\s*>', html)  # offered
    assert re.search(r'data-action="resume" disabled', html)  # not paused

    code, fragment, _ = get(scheduler, update_url(key) + "?fragment=1")
    assert code == 200 and "<html" not in fragment and 'id="why"' in fragment

    code, html, _ = get(scheduler, "/jobs/www/prod/web")
    assert code == 200 and html.count('<span class="state">HEALTHY</span>') == 3
    assert update_url(key) in html and update_url(done) in html


def test_bad_paths_answer_a_404_page(scheduler: Scheduler, client: PulsegateClient) -> None:
    ready_job(client, 1)
    for path in (
        "/nope",
        "/updates/www/prod/web",
        "/updates/www/prod/web/" + "0" * 32,
        "/updates/www/prod/web/not-a-key%3Cscript%3E",
        "/updates/%3Cb%3E/prod/web/" + "0" * 32,
        "/jobs/www/prod/missing",
        "/static/../pages.py",
        "/static/nope.js",
    ):
        code, html, headers = get(scheduler, path)
        assert code in (400, 404), (path, code)
        assert headers["Content-Type"].startswith("text/html"), path
        assert "Traceback" not in html and "<script>" not in html.replace(
            '<script src="/static/ui.js" defer></script>', ""
        ), path
    code, html, _ = get(scheduler, "/updates/%3Cb%3E/prod/web/" + "0" * 32)
    assert "&lt;b&gt;" in html or "role" in html
    # the operations endpoints keep working beside the UI
    assert get(scheduler, "/health")[0] == 200
    assert get(scheduler, "/ready")[0] == 200
    assert "pulsegate_" in get(scheduler, "/metrics")[1]
    code, js, headers = get(scheduler, "/static/ui.js")
    assert code == 200 and "javascript" in headers["Content-Type"] and "X-Pulsegate-Action" in js


def test_messages_are_escaped(scheduler: Scheduler, client: PulsegateClient) -> None:
    ready_job(client)
    key = coordinated(client)
    client.pause(key, '<script>alert("x")</script> & <b>bold</b>')
    _, html, _ = get(scheduler, update_url(key))
    assert "<script>alert" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_actions_go_through_the_handler(scheduler: Scheduler, client: PulsegateClient) -> None:
    ready_job(client)
    key = coordinated(client)
    path = update_url(key)

    # CSRF guard: a form post (no custom header, not JSON) is refused and changes nothing
    assert post(scheduler, path + "/pause", b"message=x", {"Content-Type": "text/plain"})[0] == 403
    assert post(scheduler, path + "/pause", b"x", {"X-Pulsegate-Action": "1"})[0] == 415
    assert post(scheduler, path + "/pause", b"{", ACTION) == (
        400,
        {"error": "the body is not valid JSON"},
    )
    assert post(scheduler, path + "/explode", {}, ACTION)[0] == 404
    big = json.dumps({"message": "x" * 70_000}).encode()
    assert post(scheduler, path + "/pause", big, ACTION)[0] == 413
    preflight = urllib.request.Request(base(scheduler) + path + "/pause", method="OPTIONS")
    with pytest.raises(urllib.error.HTTPError) as refused:  # no CORS: no cross-origin action
        urllib.request.urlopen(preflight, timeout=10)
    assert "Access-Control-Allow-Origin" not in refused.value.headers
    assert client.details(key).status is S.ROLL_FORWARD_AWAITING_PULSE

    assert post(scheduler, path + "/pause", {"message": "looking at errors"}, ACTION) == (
        200,
        {"ok": True, "status": "ROLL_FORWARD_PAUSED"},
    )
    last = client.details(key).record.status_events[-1]
    assert (last.status, last.user, last.message) == (
        S.ROLL_FORWARD_PAUSED,
        AUTH_OFF_USER,
        "looking at errors",
    )
    _, html, _ = get(scheduler, path)
    assert f'id="why">paused by {AUTH_OFF_USER}: looking at errors<' in html

    code, answer = post(scheduler, path + "/pause", {"message": "x" * 5000}, ACTION)
    assert code == 400 and "message" in answer["error"]  # the handler's own validation
    code, answer = post(scheduler, path + "/abort", {"message": "done looking"}, ACTION)
    assert (code, answer["status"]) == (200, "ABORTED")
    code, answer = post(scheduler, path + "/resume", {"message": ""}, ACTION)
    assert code == 400 and answer["error"]  # the server's refusal, as the page shows it
    missing = "/updates/www/prod/web/" + "0" * 32 + "/pause"
    assert post(scheduler, missing, {"message": "x"}, ACTION)[0] == 404


@pytest.fixture
def authed(zk_server, tmp_path: Path):
    s = start_scheduler(
        zk_server.hosts,
        f"/ui-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{
            "auth.enabled": True,
            "auth.principals": [
                {"name": "ops", "token_sha256": hash_token(OPERATOR_TOKEN), "roles": ["operator:*"]}
            ],
        },
    )
    try:
        yield wait_serving(s)
    finally:
        s.stop()


def test_actions_need_a_token_when_auth_is_on(authed: Scheduler) -> None:
    client = client_for(authed, token=OPERATOR_TOKEN)
    try:
        ready_job(client)
        key = coordinated(client)
        path = update_url(key) + "/pause"
        assert get(authed, update_url(key))[0] == 200  # reads are open by default
        assert 'id="token"' in get(authed, "/")[1]
        assert post(authed, path, {"message": "x"}, ACTION) == (403, {"error": "no token given"})
        bad = {**ACTION, "Authorization": "Bearer wrong"}
        assert post(authed, path, {"message": "x"}, bad) == (
            403,
            {"error": "a valid token is required"},
        )
        good = {**ACTION, "Authorization": f"Bearer {OPERATOR_TOKEN}"}
        assert post(authed, path, {"message": "by the book"}, good)[0] == 200
        last = client.details(key).record.status_events[-1]
        assert (last.user, last.message) == ("ops", "by the book")
    finally:
        client.close()


def test_follower_serves_pages_and_forwards_actions(
    scheduler: Scheduler, client: PulsegateClient, tmp_path: Path
) -> None:
    follower = start_scheduler(
        scheduler.config.zk_hosts, scheduler.config.zk_root, tmp_path / "follower"
    )
    try:
        wait_until(lambda: follower.status()["ready"], 20, 0.05, "follower not ready")
        assert follower.status()["role"] == "follower"
        ready_job(client)
        key = coordinated(client)
        code, html, _ = get(follower, "/")
        assert code == 200 and update_url(key) in html
        code, html, _ = get(follower, update_url(key))
        assert code == 200 and "waiting for the first heartbeat" in html
        assert html.count('class="cell state-healthy') == 3  # the leader's instances
        path = update_url(key) + "/pause"
        assert post(follower, path, {"message": "from the follower"}, ACTION)[0] == 200
        assert client.details(key).record.status_events[-1].message == "from the follower"
    finally:
        follower.stop()


def test_reads_that_need_a_token(zk_server, tmp_path: Path) -> None:
    principal = {"name": "ops", "token_sha256": hash_token(OPERATOR_TOKEN), "roles": ["admin"]}
    s = start_scheduler(
        zk_server.hosts,
        f"/ui-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{
            "auth.enabled": True,
            "auth.principals": [principal],
            "auth.reads_require_auth": True,
        },
    )
    try:
        wait_serving(s)
        code, html, _ = get(s, "/")
        assert code == 403 and "enter it in the token field above" in html
        code, fragment, _ = get(s, "/?fragment=1")
        assert code == 403 and "<html" not in fragment and 'data-final="0"' in fragment
        code, html, _ = get(s, "/", {"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert code == 200 and "No updates yet" in html
    finally:
        s.stop()


def test_the_update_page_shows_the_gate(scheduler: Scheduler, client: PulsegateClient) -> None:
    ready_job(client)
    settings = Settings(
        min_wait_in_instance_running_ms=100,
        heartbeat_timeout_ms=60_000,
        heartbeat_quorum=2,
        heartbeat_monitors=("canary", "slo"),
        max_blocked_ms=600_000,
    )
    key = client.start_update(JOB, V2, 3, settings=settings)
    client.heartbeat(key, monitor="canary")  # one of two: blocked on the quorum
    code, html, _ = get(scheduler, update_url(key))
    assert code == 200
    gate = re.search(
        r'<dd id="gate" class="gate-closed">closed for [^:<]+: quorum 1 of 2</dd>', html
    )
    assert gate is not None, html
    assert '<dd id="quorum">1 fresh, 2 needed</dd>' in html
    assert re.search(r'<dd id="on-blocked">pauses in 9 min \d+ s</dd>', html)
    assert re.search(r'<dd id="lease">ends in \d+ s</dd>', html)
    row = re.search(r'<tr class="monitor fresh" data-monitor="canary">(.*?)</tr>', html, re.S)
    assert row is not None and 'max="60000"' in row[1] and "ago, fresh" in row[1]
    assert 'data-monitor="slo"' not in html  # never heard from
    code, fragment, _ = get(scheduler, update_url(key) + "?fragment=1")
    assert code == 200 and 'id="gate"' in fragment  # the live refresh carries it too
    client.abort(key)
    wait_until(lambda: client.details(key).status is S.ABORTED, 15, 0.02)
    assert 'id="gate"' not in get(scheduler, update_url(key))[1]  # over: no gate
