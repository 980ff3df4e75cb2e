"""Test fault hooks: faults that tests inject into a real fit, behind ONE callable resolved once per fit.

Set in the workers' environment (tests/conftest.py, tests/tiny_models.py):

    ZEROTUNE_FAULT_KILL_AT='fold:epoch:step:marker'  rank 0 SIGKILLs itself at that step, once (the marker
                                                     file records that it did, so the restart runs on);
                                                     several kill points: comma-separated, a marker each
    ZEROTUNE_FAULT_OOM_BATCH=N                       a training step of N or more rows runs with the address
                                                     space capped at its current size, so its next
                                                     allocation fails as a real out-of-memory would
    ZEROTUNE_FAULT_PAUSE_AT='fold:epoch:step:marker' rank 0 stands still at that step, once (writing the marker
                                                     first), for up to PAUSE_S: a test acts on the running
                                                     worker at a known point (removes its node)
    ZEROTUNE_FAULT_ONLY=text                         faults fire only in fits whose records path contains text

`step_hook` returns None when no fault applies, so an ordinary fit pays nothing per step:

    hook = faults.step_hook(records_uri, rank=rank)
    with hook(fold, epoch, step, rows) if hook else nullcontext():
        ...one training step...
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

KILL_AT = "ZEROTUNE_FAULT_KILL_AT"
OOM_BATCH = "ZEROTUNE_FAULT_OOM_BATCH"
PAUSE_AT = "ZEROTUNE_FAULT_PAUSE_AT"
PAUSE_S = 120.0
ONLY = "ZEROTUNE_FAULT_ONLY"

StepHook = Callable[[int, int, int, int], AbstractContextManager]  # (fold, epoch, step, rows in the batch)


def step_hook(records_uri: str | None, *, rank: int, env: dict | None = None) -> StepHook | None:
    """The hook to wrap each training step in, or None when no fault is set for this fit."""
    env = os.environ if env is None else env
    only = env.get(ONLY)
    if only and only not in (records_uri or ""):
        return None
    kills = _kill_plan(env.get(KILL_AT)) if rank == 0 else {}
    pauses = _kill_plan(env.get(PAUSE_AT)) if rank == 0 else {}
    oom_rows = int(env[OOM_BATCH]) if env.get(OOM_BATCH) else None
    if not kills and not pauses and oom_rows is None:
        return None

    @contextmanager
    def hook(fold: int, epoch: int, step: int, rows: int):
        if (fold, epoch, step) in kills:
            _kill_once(kills[(fold, epoch, step)])
        if (fold, epoch, step) in pauses:
            _pause_once(pauses[(fold, epoch, step)])
        if oom_rows is not None and rows >= oom_rows:
            with address_space_capped():
                yield
        else:
            yield

    return hook


def _kill_plan(plan: str | None) -> dict[tuple[int, int, int], Path]:
    """{(fold, epoch, step): marker} of 'fold:epoch:step:marker[,fold:epoch:step:marker...]' (kills and pauses)."""
    kills = {}
    for point in (plan or "").split(","):
        if point.strip():
            fold, epoch, step, marker = point.strip().split(":", 3)
            kills[(int(fold), int(epoch), int(step))] = Path(marker)
    return kills


def _kill_once(marker: Path) -> None:
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _pause_once(marker: Path) -> None:
    if marker.exists():
        return  # paused before: a restarted worker group runs on
    marker.write_text(str(os.getpid()))
    time.sleep(PAUSE_S)


@contextmanager
def address_space_capped():
    """Cap this process's address space at its current size for the block, then restore the previous limit.

    The limit is lifted by whoever set it, here, whether the block fails or not: code that handles the
    resulting out-of-memory error (writing its record) runs under the process's own limits again.
    """
    import resource

    torch = sys.modules.get("torch")  # loaded in every worker; this module does not load it
    if torch is not None:
        # oneDNN's kernels would fail first, with a generic "could not create a primitive"; the plain
        # kernels allocate through torch's CPU allocator, whose failure names memory.
        torch.backends.mkldnn.enabled = False
    previous = resource.getrlimit(resource.RLIMIT_AS)
    size = _address_space_bytes()
    hard = previous[1]
    resource.setrlimit(resource.RLIMIT_AS, (size if hard == resource.RLIM_INFINITY else min(size, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
