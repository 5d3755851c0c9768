"""The web UI (DESIGN §8): server-rendered pages on every scheduler's HTTP port, with a small
script that refreshes them and sends operator actions. Templates and assets ship in this
package; nothing is fetched from anywhere else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.ui.pages import WebUI, job_url, update_url

if TYPE_CHECKING:
    from api.handler import Handler
    from scheduler.service import Scheduler

__all__ = ["WebUI", "attach", "job_url", "update_url"]


def attach(scheduler: Scheduler, handler: Handler) -> WebUI:
    """Serve the UI on the scheduler's HTTP port, through `handler` (its Thrift API's)."""
    ui = WebUI(handler, scheduler.clock)
    scheduler.pages = ui
    return ui
