"""Group commit: concurrent submissions share one durable transaction, each acked after it."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from ledger.errors import ConflictError
from ledger.log import Appended, Log, Submission, Within

Outcome = Appended | ConflictError
AfterCommit = Callable[[Sequence[Submission], Sequence[Outcome]], None]
MAX_BATCH = 2_000


class GroupCommitter:
    """One writer thread; whatever queued while it committed goes into the next commit."""

    def __init__(
        self, log: Log, *, within: Within | None = None, after_commit: AfterCommit | None = None
    ) -> None:
        self.log = log
        self.within = within
        self.after_commit = after_commit
        self._queue: queue.Queue[tuple[list[Submission], Future[list[Outcome]]] | None] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._run, name="patio-committer", daemon=True)
        self._thread.start()

    def submit(self, submissions: list[Submission]) -> Future[list[Outcome]]:
        """Queue submissions; the future resolves after their commit."""
        future: Future[list[Outcome]] = Future()
        if not submissions:
            future.set_result([])
        else:
            self._queue.put((submissions, future))
        return future

    def close(self) -> None:
        """Finish what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            count = len(item[0])
            while count < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
                count += len(more[0])
            flat = [submission for submissions, _ in batch for submission in submissions]
            try:
                outcomes = self.log.append(flat, within=self.within)
            except Exception as exc:  # a database failure fails every waiter, not the thread
                for _, future in batch:
                    future.set_exception(exc)
                continue
            position = 0
            for submissions, future in batch:  # acknowledge first: the commit stands
                future.set_result(outcomes[position : position + len(submissions)])
                position += len(submissions)
            if self.after_commit is not None:
                try:
                    self.after_commit(flat, outcomes)
                except Exception:  # metrics and wake-ups only
                    logging.getLogger(__name__).exception("after-commit hook failed")
