"""Leader election among schedulers, session-aware (DESIGN §6).

Each scheduler owns an ephemeral sequential znode under `election/` carrying its identity (id,
API and HTTP addresses); the lowest sequence number leads. The node's name starts with a uuid of
this contender (kazoo's Lock does the same): a create the server applied but whose reply was
lost (ConnectionLoss) leaves a node in our live session, and before creating again we look for
it, so one session never holds two nodes (two deadlock the election: the orphan ranks below the
others and never goes away). The election node is also the fence: every leader write checks
it, so a leader whose session expired cannot write even if it has not noticed yet.

- The kazoo connection listener only sets flags: on SUSPENDED `is_acting()` turns false at once,
  before any thread hop, so the leader stops every action immediately.
- On reconnect with the same session the leader continues (same epoch, memory kept).
- On session LOST it becomes a follower, the owner drops its memory, and it contends again with a
  new node. A new term of leadership gets a new epoch.

ZooKeeper calls run on a thread of our own: they must never run in the listener.
"""

from __future__ import annotations

import contextlib
import enum
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from scheduler.fencing import NotLeader
from scheduler.paths import Paths, election_sequence

log = structlog.get_logger(__name__)


class Role(enum.Enum):
    FOLLOWER = "follower"
    LEADER = "leader"
    SUSPENDED = "suspended"  # was leading, connection lost, session may still be alive
    STOPPED = "stopped"


class Leadership:
    def __init__(
        self,
        client: KazooClient,
        paths: Paths,
        identity: dict[str, Any],
        on_change: Callable[[], None] = lambda: None,
        session_file: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.client = client
        self.paths = paths
        self.identity = identity
        self.on_change = on_change
        self.session_file = session_file
        self.timeout_s = timeout_s
        self.role = Role.FOLLOWER
        self.epoch = 0
        self._node: str | None = None
        self._prefix = paths.contender_prefix(uuid.uuid4().hex)
        self._node_session: int | None = None
        self._connected = False
        self._lost = False
        self._last_state: str | None = None
        self._seen_session: int | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._role_lock = threading.Lock()  # stop() and _set_role(): STOPPED is final
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)
        client.add_listener(self._listen)

    # -- what others ask -----------------------------------------------------------------------

    def is_acting(self) -> bool:
        """True only while this scheduler leads and is connected: the gate for every action.

        Also false while a session loss is pending, and on any session other than the one our
        election node lives in: the listener may already have seen CONNECTED on a new session
        before the election thread demoted us."""
        return (
            self.role is Role.LEADER
            and self._connected
            and not self._lost
            and self._node_session is not None
            and self._node_session == self._session()
        )

    def node(self) -> str:
        """The fence: our election node, or NotLeader."""
        node = self._node
        if not self.is_acting() or node is None:
            raise NotLeader("this scheduler is not the acting leader")
        return node

    def leader_identity(self) -> dict[str, Any] | None:
        """Who leads now, from ZooKeeper: the serving leader if there is one, else the holder
        of the lowest election node."""
        try:
            data, _ = self.client.get_async(self.paths.leader).get(timeout=self.timeout_s)
            return dict(json.loads(data))
        except NoNodeError:
            pass
        except (KazooException, ValueError):
            return None
        try:
            children = sorted(
                self.client.get_children_async(self.paths.election).get(timeout=self.timeout_s),
                key=election_sequence,
            )
            if not children:
                return None
            path = f"{self.paths.election}/{children[0]}"
            data, _ = self.client.get_async(path).get(timeout=self.timeout_s)
            return {**json.loads(data), "serving": False}
        except (KazooException, ValueError):
            return None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._connected = self.client.connected
        self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Release leadership at once: delete our nodes (closing the session would do it too,
        but this is immediate even if the caller keeps the client)."""
        with self._role_lock:  # an in-flight _step cannot take the role back after this
            self._stopping = True
            was, self.role = self.role, Role.STOPPED
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for path in (self.paths.leader if was is Role.LEADER else None, self._node):
            if path is None:
                continue
            with contextlib.suppress(KazooException):
                self.client.delete_async(path).get(timeout=2)
        self._node = None
        if was is not Role.STOPPED:
            log.info("leadership_released", role=was.value)

    def publish_serving(self, extra: dict[str, Any]) -> None:
        """Announce, fenced, that this leader has rehydrated and serves."""
        node = self.node()
        value = json.dumps({**self.identity, **extra, "serving": True}).encode()
        t = self.client.transaction()
        t.check(node, 0)
        t.delete(self.paths.leader)
        t.create(self.paths.leader, value, ephemeral=True)
        results = t.commit_async().get(timeout=self.timeout_s)
        if isinstance(results[1], NoNodeError):  # nothing to replace: create only
            t = self.client.transaction()
            t.check(node, 0)
            t.create(self.paths.leader, value, ephemeral=True)
            results = t.commit_async().get(timeout=self.timeout_s)
        if any(isinstance(r, Exception) for r in results):
            raise NotLeader(f"could not publish leadership: {results}")

    # -- internals -----------------------------------------------------------------------------

    def _listen(self, state: str) -> None:
        # Runs in kazoo's connection thread: flags only, no ZooKeeper calls, no blocking.
        self._connected = state == KazooState.CONNECTED
        if state == KazooState.LOST:
            self._lost = True
        self._wake.set()

    def _session(self) -> int | None:
        client_id = self.client.client_id
        return client_id[0] if client_id else None

    def _on_predecessor(self, event: Any) -> None:
        # One bound method for every step: kazoo keeps watchers in a set, so registering it
        # again on the same path adds nothing (a new lambda each step would pile up).
        self._wake.set()

    def _set_role(self, role: Role, why: str) -> None:
        with self._role_lock:
            if role is self.role or self._stopping:  # once stopped, no role change
                return
            previous, self.role = self.role, role
            if role is Role.LEADER and previous is not Role.SUSPENDED:
                self.epoch += 1
        log.info(
            "leadership_changed",
            role=role.value,
            previous=previous.value,
            epoch=self.epoch,
            why=why,
            node=self._node,
        )
        self.on_change()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self._step()
            except KazooException as e:
                log.debug("election_retry", error=type(e).__name__)
            except Exception:  # never let the election thread die
                log.exception("election_failed")

    def _step(self) -> None:
        if self._stopping:
            return  # no new node, no role: stop() has released everything
        state = self.client.state
        if state != self._last_state and (self._last_state or state == KazooState.CONNECTED):
            log.info("zookeeper_state", state=str(state).lower())  # once per change
        self._last_state = state
        if self._lost:
            self._node = None
            if self.role in (Role.LEADER, Role.SUSPENDED):
                self._set_role(Role.FOLLOWER, "session lost")
            self._lost = False  # only once demoted: is_acting() relies on it until then
        if state != KazooState.CONNECTED:
            if self.role is Role.LEADER:
                self._set_role(Role.SUSPENDED, "connection suspended")
            return
        session = self._session()
        if session != self._seen_session:
            self._seen_session = session
            self._write_session_file()
        if self._node is not None and self._node_session != session:
            self._node = None  # a new session: our ephemeral node died with the old one
            if self.role in (Role.LEADER, Role.SUSPENDED):
                self._set_role(Role.FOLLOWER, "new session")
        if self._node is None or self.client.exists(self._node) is None:
            for path in self.paths.containers():
                self.client.ensure_path(path)
            self._node = self._find_node(session) or self.client.create(
                self._prefix, json.dumps(self.identity).encode(), ephemeral=True, sequence=True
            )
            self._node_session = session
        node = self._node  # stop() may clear it while we are here
        children = sorted(self.client.get_children(self.paths.election), key=election_sequence)
        mine = node.rsplit("/", 1)[1]
        if mine not in children:
            self._node = None
            self._wake.set()
            return
        index = children.index(mine)
        if index == 0:
            self._set_role(Role.LEADER, "lowest election node")
            return
        if self.role in (Role.LEADER, Role.SUSPENDED):
            self._set_role(Role.FOLLOWER, "no longer the lowest election node")
        predecessor = f"{self.paths.election}/{children[index - 1]}"
        if self.client.exists(predecessor, watch=self._on_predecessor) is None:
            self._wake.set()  # gone already: look again

    def _find_node(self, session: int | None) -> str | None:
        """Our node in this session, if a create whose reply was lost made one. Should there be
        several (a look that ran before a lost create landed), the lowest is kept."""
        name = self._prefix.rsplit("/", 1)[1]
        found = []
        for child in self.client.get_children(self.paths.election):
            if not child.startswith(name):
                continue
            path = f"{self.paths.election}/{child}"
            stat = self.client.exists(path)
            if stat is not None and stat.ephemeralOwner == session:
                found.append(path)
        found.sort(key=election_sequence)
        for extra in found[1:]:
            with contextlib.suppress(NoNodeError):
                self.client.delete(extra)
        if found:
            log.info("election_node_found", node=found[0])
        return found[0] if found else None

    def _write_session_file(self) -> None:
        if not self.session_file or not self.client.client_id:
            return
        session_id, password = self.client.client_id
        path = Path(self.session_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"session_id": session_id, "password": password.hex()}))
        tmp.chmod(0o600)
        tmp.replace(path)
