"""The web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a
real scheduler running real local instances: open the list, follow a coordinated update live
while a monitor heartbeats and goes quiet, pause it with a reason, see the reason in the
timeline, resume it, watch it finish. Screenshots land in tests/.artifacts/ui/."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

from api.auth import hash_token
from api.client import PulsegateClient
from api.ui import update_url
from scheduler.service import Scheduler
from updater.keys import JobKey, UpdateKey
from updater.settings import Settings
from updater.status import UpdateStatus as S
from updater.task import HealthCheck, HealthCheckKind, TaskConfig

from cluster import FAST_SIM, client_for, start_scheduler, wait_serving
from waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / ".artifacts" / "ui"
JOB = JobKey("www", "test", "ui")
# Patient with a slow start (a loaded machine can take a second to start Python): 5 s of
# failed checks before a restart. Nothing here tests unhealthy instances.
CHECK = HealthCheck(HealthCheckKind.HTTP, interval_ms=100, timeout_ms=1000, unhealthy_threshold=50)
WAIT_MS = 15_000  # for the page to show a change (it refreshes every second)


def service(version: str) -> TaskConfig:
    return TaskConfig.make(
        ["python3", "examples/service.py"],  # as in examples/hello-v1.toml; reads well on the page
        working_dir=str(ROOT),
        environment={"VERSION": version},
        health_check=CHECK,
        stop_grace_ms=2000,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert CHROMIUM.exists(), (
        "no /usr/bin/chromium: run deploy/bootstrap.sh (apt-get install chromium)"
    )
    expect.set_options(timeout=WAIT_MS)  # assertions wait this long (Playwright's default: 5 s)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()
            expect.set_options(timeout=5000)


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    yield p
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PlaywrightError):  # the last view, for a failure's post-mortem
        p.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
    context.close()


def shoot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def local(zk_server, tmp_path: Path) -> Iterator[tuple[Scheduler, PulsegateClient]]:
    s = start_scheduler(
        zk_server.hosts, f"/ui-{uuid.uuid4().hex[:8]}", tmp_path, **{"driver.kind": "local"}
    )
    wait_serving(s)
    client = client_for(s)
    try:
        yield s, client
    finally:
        for job in client.list_jobs():  # stop what the test started
            client.kill_job(job)
        client.close()
        wait_until(lambda: not s.driver.pids(JOB), timeout=30)  # type: ignore[union-attr]
        s.stop()


class Monitor:
    """A heartbeat monitor in a thread: beats every 200 ms until told to go quiet."""

    def __init__(self, scheduler: Scheduler, key: UpdateKey) -> None:
        self.client = client_for(scheduler)
        self.key = key
        self.quiet = threading.Event()
        self.beats = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.quiet.is_set():
            self.client.heartbeat(self.key)
            self.beats += 1
            self.quiet.wait(0.2)  # the monitor's interval, not a wait for a condition

    def stop(self) -> None:
        self.quiet.set()
        self.thread.join(timeout=10)
        self.client.close()


def test_follow_block_pause_resume(local, page) -> None:  # type: ignore[no-untyped-def]
    scheduler, client = local
    client.create_job(JOB, service("1"), 4)
    wait_until(lambda: client.is_settled(JOB, 4), 30, 0.05, "v1 did not become healthy")
    settings = Settings(min_wait_in_instance_running_ms=800, heartbeat_timeout_ms=2000)
    key = client.start_update(JOB, service("2"), 4, settings=settings, message="v2")
    base = f"http://127.0.0.1:{scheduler.http.port}"

    # the list shows the update; its link opens the update page
    page.goto(base + "/")
    expect(page.locator("#updates")).to_contain_text("ROLL_FORWARD_AWAITING_PULSE")
    expect(page.locator("#updates")).to_contain_text("waiting for the first heartbeat")
    expect(page.locator("#jobs")).to_contain_text("www/test/ui")
    page.click(f'a.key[href="{update_url(key)}"]')
    expect(page).to_have_url(base + update_url(key))
    expect(page.locator("#why")).to_have_text("waiting for the first heartbeat")
    expect(page.locator("#grid .cell")).to_have_count(4)
    pids = scheduler.driver.pids(JOB)  # type: ignore[union-attr]
    expect(page.locator('#grid .cell[data-instance="0"] .where')).to_contain_text(f"pid {pids[0]}")
    shoot(page, "update-waiting")

    # a monitor heartbeats: the page follows the update live
    monitor = Monitor(scheduler, key)
    try:
        expect(page.locator("#status")).to_have_text("ROLLING_FORWARD")
        expect(page.locator("#heartbeat")).to_contain_text("last heartbeat")
        wait_until(lambda: (p := client.details(key).progress) and p.done >= 1, 30, 0.01)
    finally:
        monitor.stop()  # ... and goes quiet
    assert monitor.beats > 0
    expect(page.locator("#status")).to_have_text("ROLL_FORWARD_AWAITING_PULSE")
    expect(page.locator("#why")).to_contain_text("blocked: no heartbeat for")
    expect(page.locator("#heartbeat")).to_have_class("stale")
    expect(page.locator("#grid .cell .step").first).to_have_text("updated")
    shoot(page, "update-blocked")

    # Pause with a reason: asked for in a prompt, recorded with who and why
    reason = "checking the canary's error rate"
    page.once("dialog", lambda dialog: dialog.accept(reason))
    page.click('button[data-action="pause"]')
    expect(page.locator("#flash")).to_have_text("pause: done, now ROLL_FORWARD_PAUSED")
    expect(page.locator("#status")).to_have_text("ROLL_FORWARD_PAUSED")
    expect(page.locator("#why")).to_have_text(f"paused by anonymous (auth off): {reason}")
    expect(page.locator("#timeline tbody tr").first).to_contain_text(reason)
    expect(page.locator('button[data-action="pause"]')).to_be_disabled()
    shoot(page, "update-paused")
    last = client.details(key).record.status_events[-1]
    assert (last.status, last.message) == (S.ROLL_FORWARD_PAUSED, reason)

    # heartbeats again, Resume: it rolls on to the end
    monitor = Monitor(scheduler, key)
    try:
        page.click('button[data-action="resume"]')
        expect(page.locator("#flash")).to_contain_text("resume: done")
        expect(page.locator("#status")).to_have_text("ROLLED_FORWARD", timeout=60_000)
    finally:
        monitor.stop()
    expect(page.locator("#progress-text")).to_contain_text("4 of 4 done")
    expect(page.locator("#live")).to_have_text("final")
    expect(page.locator("#timeline")).to_contain_text("resumed")
    shoot(page, "update-done")

    page.click("nav.crumbs a")  # the job page: its instances, now at v2, with their processes
    expect(page.locator("#instances tbody tr")).to_have_count(4)
    expect(page.locator("#instances")).to_contain_text("desired")
    live = scheduler.driver.pids(JOB)  # type: ignore[union-attr]
    expect(page.locator("#instances tbody tr").first).to_contain_text(str(live[0]))
    shoot(page, "job")


@pytest.fixture
def authed(zk_server, tmp_path: Path) -> Iterator[Scheduler]:
    principal = {"name": "ops", "token_sha256": hash_token("t-ops"), "roles": ["operator:*"]}
    s = start_scheduler(
        zk_server.hosts,
        f"/ui-auth-{uuid.uuid4().hex[:8]}",
        tmp_path,
        **{"auth.enabled": True, "auth.principals": [principal]},
    )
    try:
        yield wait_serving(s)
    finally:
        s.stop()


def test_token_prompt_and_refusal_shown(authed: Scheduler, page) -> None:  # type: ignore[no-untyped-def]
    client = client_for(authed, token="t-ops")
    try:
        v1 = TaskConfig.make(["serve", "1"], labels=FAST_SIM)
        client.create_job(JOB, v1, 2)
        wait_until(lambda: client.is_settled(JOB, 2), 15, 0.02)
        settings = Settings(heartbeat_timeout_ms=60_000)
        key = client.start_update(
            JOB, TaskConfig.make(["serve", "2"], labels=FAST_SIM), 2, settings=settings
        )
        page.goto(f"http://127.0.0.1:{authed.http.port}{update_url(key)}")
        answers = ["first reason", "wrong-token"]
        page.on("dialog", lambda dialog: dialog.accept(answers.pop(0)))
        page.click('button[data-action="pause"]')  # the reason, then the token prompt
        expect(page.locator("#flash")).to_have_text("pause failed: a valid token is required")
        assert client.details(key).status is S.ROLL_FORWARD_AWAITING_PULSE
        shoot(page, "auth-refused")

        page.fill("#token", "t-ops")
        page.dispatch_event("#token", "change")
        answers.append("second reason")
        page.click('button[data-action="pause"]')
        expect(page.locator("#status")).to_have_text("ROLL_FORWARD_PAUSED")
        expect(page.locator("#why")).to_have_text("paused by ops: second reason")
    finally:
        client.close()
