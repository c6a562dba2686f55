"""One attempt's hold on a run, shared by the thread that trains it and the heartbeat thread that keeps it.

The training thread never waits on the database between epochs: its recorder hands the latest progress to the
Attempt, and the heartbeat writes it while it renews the lease (store.renew_lease), bringing back whether the
owner asked to cancel. The recorder then learns at its next report what the heartbeat learned: a cancel, a
stop asked of the worker (SIGTERM), or that the lease was lost (another attempt took the run); the last two end
the loop by an exception, the first through fit()'s own Cancelled.
"""
from __future__ import annotations

import threading
from enum import StrEnum

from fercore.store import LeaseLost


class Cause(StrEnum):
    """Why a run stopped before its end (policy.end_interrupted decides what each means for the run)."""
    OWNER = "owner"                     # its owner's Cancel, `runs cancel`, or Ctrl-C on a foreground `train`
    WORKER_STOPPED = "worker stopped"   # SIGTERM or Ctrl-C to the worker training it
    CRASH = "crash"                     # its process died or froze past its lease: the reaper took it


class Interrupted(Exception):
    """Raised in the training thread when the run must stop for `cause` (not its owner's cancel)."""

    def __init__(self, cause: Cause):
        super().__init__(str(cause))
        self.cause = cause


class Attempt:
    """The lease (run id and token) one attempt holds, and what its two threads tell each other."""

    def __init__(self, run_id: int, token: int, stop: threading.Event | None = None):
        """`stop`: set when the process that trains the run is asked to stop (a worker's SIGTERM)."""
        self.run_id, self.token, self.stop = run_id, token, stop
        self._lock = threading.Lock()
        self._progress: dict | None = None
        self.cancel_requested = False
        self.lost: LeaseLost | None = None
        self.ended = False   # the attempt wrote its run's last word (or stopped): nothing more to renew

    def hand_progress(self, progress: dict) -> None:
        with self._lock:
            self._progress = progress

    def take_progress(self) -> dict | None:
        with self._lock:
            progress, self._progress = self._progress, None
            return progress

    def check(self) -> bool:
        """For the training thread at each report: raises LeaseLost or Interrupted if the run must stop, else
        returns whether its owner asked to cancel it."""
        if self.lost is not None:
            raise self.lost
        if self.stop is not None and self.stop.is_set():
            raise Interrupted(Cause.WORKER_STOPPED)
        return self.cancel_requested
