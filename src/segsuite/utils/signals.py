"""Signals that stop a run: Ctrl-C (SIGINT), a kill or a cluster's preemption (SIGTERM: SLURM, Kubernetes),
a closed terminal (SIGHUP), SIGUSR1/SIGUSR2 (sent ahead of a job's time limit).

Each becomes `RunStopped`, a failure like any other: the run keeps `interrupted.ckpt` with the command that
resumes it, writes `FAILED` and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a
process killed by the signal would report. While training, the first signal lets the current step finish
(`CheckpointOnFailure` stops before the next one, on every rank at the same step); a second one stops at once.
A signal some other code already handles (submitit's SIGUSR2) is left to it, and so is SIGUSR1 under SLURM
(Lightning's auto-requeue: it saves and requeues the job, and the SIGTERM that follows stops the run here).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from lightning_fabric.plugins.environments import SLURMEnvironment

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))


class RunStopped(Exception):
    """The run was stopped by signal `signum`; the process exits with `exit_code` (128 + signum)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"stopped by {self.name}")

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


class _State:
    def __init__(self) -> None:
        self.deferring = False          # training: the first signal waits for the end of the step
        self.pending: int | None = None
        self.owned: set[int] = set()    # the signals `stop_on_signals` handles


_state = _State()


def _on_signal(signum: int, frame: Any) -> None:
    if _state.deferring and _state.pending is None:
        _state.pending = signum
        print(f"\n{RunStopped(signum).name} received: stopping after the current training step "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)
        return
    raise RunStopped(signum)


def _ours(handler: Any) -> bool:
    return handler is _on_signal


def _free(signum: int, handler: Any) -> bool:
    """Whether `signum` is left to its default (nobody else handles it)."""
    if signum == signal.SIGINT:
        return handler in (signal.default_int_handler, signal.SIG_DFL)
    return handler in (signal.SIG_DFL, None)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the stop signals into `RunStopped` for the duration (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = STOP_SIGNALS
    if SLURMEnvironment.detect():  # Lightning's SLURM auto-requeue takes SIGUSR1 (saves, requeues; SIGTERM follows)
        stop = tuple(s for s in stop if s != getattr(signal, "SIGUSR1", None))
    previous = {s: signal.getsignal(s) for s in stop}
    owned = {s for s, handler in previous.items() if _free(s, handler) or _ours(handler)}
    saved_owned = _state.owned
    _state.owned, _state.pending, _state.deferring = owned, None, False
    for s in owned:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s in owned:
            signal.signal(s, previous[s])
        _state.owned, _state.pending, _state.deferring = saved_owned, None, False


def reclaim() -> None:
    """Handle the stop signals again where a trainer put its own handler over ours (Lightning's SIGTERM
    handler stops at any point of validation and exits 0)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in _state.owned:
        signal.signal(s, _on_signal)


def defer(on: bool) -> None:
    """While `on` (training), the first signal is only recorded (`pending`), for a stop at the next step."""
    _state.deferring = on


def pending() -> int | None:
    """The signal received while deferring, if any."""
    return _state.pending
