"""One writer per sweep: a lease on the sweep's storage, taken before a run writes and released when it ends.

Object stores reached through pyarrow have no conditional write, so the lease is a claim protocol that needs
none: each runner writes a claim of its own (`SweepDir.lease_claim`: a unique name, so no runner overwrites
another's), waits `settle_s` for claims written at the same moment to become visible, and reads every claim
back. The earliest live claim by (started, owner) wins: it marks itself `held`; every other runner deletes its
claim and is refused, naming the holder. The holder's daemon thread rewrites its heartbeat every `heartbeat_s`.

A claim is live while its heartbeat is younger than `timeout_s` (storage.lease_timeout_s), unless it was made on
this host by this user and its process is gone (a SIGKILLed driver): that one is taken over at once, as a local
lock file would be. A stale claim is taken over, with a warning naming its holder; the new holder lists it in
`took_over`, so that the old one, should it wake up, knows it lost the sweep (and deletes its claim even if its
last heartbeat raced the takeover). Heartbeats are compared with this host's clock: the timeout (minutes) is
far above the clock skew between the hosts of one cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace

from sweeps.layout import SweepDir
from trainer.storage import exists, filesystem, read_json, write_json
from zerotune.errors import StorageError

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # how often the holder proves it is alive
SETTLE_S = 1.5  # how long a claim waits for claims written at the same moment to become visible


@dataclass(frozen=True)
class Claim:
    """One runner's claim on a sweep; `started` and `owner` order the claims, `heartbeat` shows it is alive."""

    owner: str  # a uuid per run
    host: str
    pid: int
    pid_started: float  # the process's start time: a reused pid is not mistaken for the holder
    thread: int  # the claiming thread: a refit inside the sweep's own run is the same writer
    uid: int
    started: float
    heartbeat: float
    held: bool = False  # it won: every other claim is a runner about to be refused, or one it took over
    took_over: tuple[str, ...] = ()  # the owners of the stale claims it replaced

    @classmethod
    def mine(cls) -> Claim:
        now = time.time()
        return cls(
            owner=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            pid_started=_process_started(os.getpid()) or 0.0,
            thread=threading.get_ident(),
            uid=os.getuid(),
            started=now,
            heartbeat=now,
        )

    @classmethod
    def from_json(cls, saved: dict) -> Claim:
        """KeyError/TypeError when `saved` is not a claim."""
        values = {f.name: saved[f.name] for f in fields(cls) if f.name in saved}
        return cls(**{**values, "took_over": tuple(values.get("took_over", ()))})

    @property
    def order(self) -> tuple[float, str]:
        return (self.started, self.owner)

    def same_writer(self, other: Claim) -> bool:
        """The same process and thread: a nested take (a refit inside `sweep run`) shares the outer lease."""
        mine = (self.host, self.pid, self.pid_started, self.thread)
        return mine == (other.host, other.pid, other.pid_started, other.thread)

    def gone(self) -> bool:
        """Made on this host by this user, by a process that no longer runs (only this host can tell)."""
        if self.host != socket.gethostname() or self.uid != os.getuid():
            return False
        started = _process_started(self.pid)
        return started is None or abs(started - self.pid_started) > 1.0

    def live(self, now: float, timeout_s: float) -> bool:
        return now - self.heartbeat < timeout_s and not self.gone()

    def describe(self, now: float) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started))
        age = max(0.0, now - self.heartbeat)
        return f"host {self.host}, pid {self.pid}, since {since}, last heartbeat {age:.0f} s ago"


class Lease:
    """This run's hold on a sweep: a daemon thread refreshes its heartbeat until `release()`.

    `lost` turns true when another runner took the sweep over (it judged this one stale: the driver was frozen or
    cut off from the storage for longer than the timeout). A nested hold (`claim` None) owns nothing."""

    def __init__(self, sweep: SweepDir, claim: Claim | None, *, heartbeat_s: float, takeovers: tuple[str, ...] = ()):
        self.sweep, self.claim, self.lost = sweep, claim, False
        self.takeovers = takeovers  # one line per stale run this one took the sweep over from (the run's console)
        self.path = None if claim is None else sweep.lease_claim(claim.started, claim.owner)
        self._stop = threading.Event()
        self._thread = None
        if claim is not None:
            self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name="lease-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                claims = _claims(self.sweep)  # (a claim that cannot be read now is left out: not this one)
                if not exists(self.path) or any(self.claim.owner in c.took_over for c in claims.values()):
                    self.lost = True
                    log.error("another run took over the sweep %s: stop this one", self.sweep.uri)
                    _delete(self.path, why="lost")  # should this run's last heartbeat have written it again
                    return
                for path, claim in claims.items():  # a holder taken over that wrote once more before it knew
                    if claim.owner in self.claim.took_over:
                        _delete(path, why="takeover")
                self.claim = replace(self.claim, heartbeat=time.time())
                write_json(self.path, asdict(self.claim))
            except (StorageError, OSError) as exc:  # the storage watch reports a broken storage; keep beating
                log.warning("lease heartbeat on %s failed: %s", self.sweep.uri, getattr(exc, "message", exc))

    def release(self) -> None:
        """Stop the heartbeat and delete the claim (a nested hold releases nothing: its outer hold does)."""
        if self.claim is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if not self.lost:
            _delete(self.path, why="release")
        self.claim = None


def take(uri: str, *, timeout_s: float, heartbeat_s: float = HEARTBEAT_S, settle_s: float = SETTLE_S) -> Lease:
    """Take the lease on the sweep at `uri`, or raise StorageError naming the run that holds it."""
    sweep = SweepDir(uri)
    me = Claim.mine()
    now = time.time()
    claims = _claims(sweep)
    if any(me.same_writer(c) and c.held for c in claims.values()):
        return Lease(sweep, None, heartbeat_s=heartbeat_s)  # this thread holds it already (a refit inside a run)
    held = [c for c in claims.values() if c.held and c.live(now, timeout_s)]
    if held:  # refused at once, before writing anything
        raise _refused(sweep, min(held, key=lambda c: c.order), now, timeout_s)
    path = sweep.lease_claim(me.started, me.owner)
    write_json(path, asdict(me))
    time.sleep(settle_s)
    now = time.time()
    claims = {**_claims(sweep), path: me}
    live = {p: c for p, c in claims.items() if p == path or c.live(now, timeout_s)}
    # A claim already held wins over newer ones even if its clock ran ahead: a runner on a host whose clock lags
    # cannot win against a sweep that is already running.
    holder = min(live.values(), key=lambda c: (not c.held, *c.order))
    if holder.owner != me.owner:
        _delete(path, why="refusal")
        raise _refused(sweep, holder, now, timeout_s)
    stale = {p: c for p, c in claims.items() if p not in live}
    me = replace(me, heartbeat=now, held=True, took_over=tuple(c.owner for c in stale.values()))
    write_json(path, asdict(me))
    took = []
    for old_path, old in stale.items():
        why = (
            "its process is gone from this host, so it is taken over at once"
            if old.gone()
            else (f"no heartbeat for over {timeout_s:.0f} s (storage.lease_timeout_s)")
        )
        took.append(f"taking over the sweep {uri} from the run on {old.describe(now)}: {why}")
        log.warning("%s", took[-1])
        _delete(old_path, why="takeover")
    return Lease(sweep, me, heartbeat_s=heartbeat_s, takeovers=tuple(took))


@contextmanager
def hold(
    uri: str, *, timeout_s: float, heartbeat_s: float = HEARTBEAT_S, settle_s: float = SETTLE_S
) -> Iterator[Lease]:
    """The lease for the block; released however the block ends (return, error, Ctrl+C)."""
    lease = take(uri, timeout_s=timeout_s, heartbeat_s=heartbeat_s, settle_s=settle_s)
    try:
        yield lease
    finally:
        lease.release()


def _claims(sweep: SweepDir) -> dict[str, Claim]:
    out = {}
    for path in sweep.lease_claims():
        try:
            out[path] = Claim.from_json(read_json(path))
        except (StorageError, KeyError, TypeError):  # deleted since listed (a refused runner's), or not a claim
            continue
    return out


def _refused(sweep: SweepDir, holder: Claim, now: float, timeout_s: float) -> StorageError:
    return StorageError(
        f"the sweep {sweep.uri} is being written by another run: {holder.describe(now)}",
        field="name",
        fix=(
            f"wait for that run to end, or stop it (pid {holder.pid} on {holder.host}); a run without a heartbeat "
            f"for {timeout_s:.0f} s (storage.lease_timeout_s) is taken over by the next one; or use another name"
        ),
    )


def _delete(path: str, *, why: str) -> None:
    try:
        if not exists(path):
            return
        fs, inner = filesystem(path)
        fs.delete_file(inner)
    except (StorageError, OSError) as exc:  # deleted meanwhile, or read-only storage: the next run takes it over
        log.warning("could not delete the lease claim %s (%s): %s", path, why, getattr(exc, "message", exc))


def _process_started(pid: int) -> float | None:
    """When process `pid` started on this host, or None if there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # it exists; its start time is not ours to read
        return float("nan")
