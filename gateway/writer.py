"""The writer: a child process that group-commits appends for the HTTP process.

Why a process: in one process the event loop and a commit thread take turns on the GIL,
and each hand-off the commit thread needs (every SQLite call releases the GIL) waits for
the loop to yield, up to the 5 ms switch interval. In the server a 6-entry commit took
4.2 ms of wall time against 0.5 ms alone. The child commits on the other core; the loop
only writes and reads frames on a socket.

The writer also runs contract admission (gateway.submissions.decide). The HTTP process
prechecks each envelope in full with its spare CPU (strict schema, canonical JSON, signature);
the writer then only confirms that the device may still submit with the key that verified it,
and admits in full whatever comes unchecked.

Wire format, both ways: 4-byte big-endian length, then a pickle (both ends are this
package, started together). A request frame is (batch id, Admit | RegistryChange |
AlertRecord); a reply frame is [(batch id, verdicts or WriteFailed), ...], one per group of
commits, sent after them.
A registry change is a commit of its own (gateway.submissions.change_registry), in the order
it arrived among the envelopes; so is a sent alert's record (gateway.alerts.record).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from contracts.alert import AlertRecord
from contracts.device_registry import RegistryChange
from gateway.submissions import Admit, Verdict, WriteFailed, change_registry, decide
from ledger.errors import ConflictError
from ledger.keys import NamedKey
from ledger.log import Appended, Log, Submission, Within

if TYPE_CHECKING:
    from gateway.directory import Directory as GatewayDirectory

Request = Admit | RegistryChange | AlertRecord
AfterCommit = Callable[[Sequence[Verdict]], None]

HEADER = struct.Struct("!I")
MAX_COMMIT = 2_000  # envelopes per commit; what arrives beyond waits for the next one
SOCKET_BUFFER = 4 << 20
RESTART_MAX_DELAY = 5.0  # seconds between attempts to start a writer that keeps failing
URL_VARIABLE = "PATIO_WRITER_DATABASE_URL"  # not argv: a password would show in `ps`
# The registry key file's text: the writer signs registry (and alert) entries. A process's
# environment is readable by its own user only, as the key file is.
REGISTRY_VARIABLE = "PATIO_WRITER_REGISTRY_KEY"
# Benchmarks only (bench/gateway.py --no-rollups): "0" leaves rollups to the next catch-up.
ROLLUPS_VARIABLE = "PATIO_ROLLUPS"
log = logging.getLogger(__name__)


class WriterUnavailable(Exception):
    """The append was not committed: the writer failed or restarted; retry."""


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


# -- the child process ------------------------------------------------------------------


class FrameReader:
    """Frames from a blocking socket: everything that has arrived, at least one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _complete(self) -> bool:
        if len(self.buffer) < HEADER.size:
            return False
        size: int = HEADER.unpack_from(self.buffer)[0]
        return len(self.buffer) >= HEADER.size + size

    def read(self) -> list[Any]:
        """Wait for a complete frame, take what else has arrived too; [] at end of stream."""
        while not self._complete():
            data = self.sock.recv(SOCKET_BUFFER)
            if not data:
                return []
            self.buffer += data
        while True:  # whatever else is already here joins this commit
            try:
                data = self.sock.recv(SOCKET_BUFFER, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
        frames = []
        while self._complete():
            (size,) = HEADER.unpack_from(self.buffer)
            frames.append(pickle.loads(self.buffer[HEADER.size : HEADER.size + size]))
            del self.buffer[: HEADER.size + size]
        return frames


def _size(request: Request) -> int:
    return len(request.envelopes) if isinstance(request, Admit) else 1


def _commits(frames: list[tuple[int, Request]]) -> Iterator[list[tuple[int, Request]]]:
    group: list[tuple[int, Request]] = []
    count = 0
    for frame in frames:
        if group and count + _size(frame[1]) > MAX_COMMIT:
            yield group
            group, count = [], 0
        group.append(frame)
        count += _size(frame[1])
    if group:
        yield group


class DirectoryChanged(Exception):
    """A device changed after the commit's checks began: it is decided again."""


FRESH_ATTEMPTS = 50  # each failed attempt means another process committed a device change


def _decide_fresh(
    requests: list[Admit], log_: Log, directory: GatewayDirectory, within: Within | None
) -> list[list[Verdict]]:
    """`decide` on the directory as of the commit: changes another process made (a
    revocation) apply from this commit on, also one committed while it was being checked."""

    def unchanged(conn: Any, submissions: Any, outcomes: Any) -> None:
        # Inside the append's transaction, after its lock (PostgreSQL's advisory lock,
        # SQLite's write lock): a revocation committed before this point precedes these
        # entries in the log, so they must have been checked against it.
        if directory.changed_since_refresh(conn):
            raise DirectoryChanged
        if within is not None:
            within(conn, submissions, outcomes)

    for _ in range(FRESH_ATTEMPTS):
        directory.refresh()
        try:
            return decide(requests, log=log_, directory=directory, within=unchanged)
        except DirectoryChanged:
            log.info("a device changed while a commit was checked; checking it again")
    raise DirectoryChanged(f"devices changed during {FRESH_ATTEMPTS} attempts at one commit")


def _runs(group: list[tuple[int, Request]]) -> Iterator[list[tuple[int, Request]]]:
    """The group in order: runs of envelope requests (one commit each), and each registry
    change or alert record alone."""
    run: list[tuple[int, Request]] = []
    for frame in group:
        if isinstance(frame[1], Admit):
            run.append(frame)
            continue
        if run:
            yield run
            run = []
        yield [frame]
    if run:
        yield run


def _commit(
    run: list[tuple[int, Request]],
    log_: Log,
    directory: GatewayDirectory,
    within: Within | None,
    signer: NamedKey,
) -> list[tuple[int, list[Verdict] | WriteFailed]]:
    batches = [batch for batch, _ in run]
    try:
        if isinstance(change := run[0][1], RegistryChange):
            verdicts = [[change_registry(change, log=log_, signer=signer)]]
        elif isinstance(record := run[0][1], AlertRecord):
            from gateway.alerts.record import record_alert

            verdicts = [[record_alert(record, log_=log_, signer=signer)]]
        else:
            admits = [request for _, request in run if isinstance(request, Admit)]
            verdicts = _decide_fresh(admits, log_, directory, within)
    except Exception as exc:  # every batch of the commit fails; the writer goes on
        log.exception("commit failed")
        # If the database dropped this connection (a restart), it dropped the pooled
        # ones too: open new ones rather than fail a commit on each.
        log_.engine.dispose()
        failed = WriteFailed(f"{type(exc).__name__}: {exc}")
        return [(batch, failed) for batch in batches]
    return list(zip(batches, verdicts, strict=True))


def serve(
    sock: socket.socket,
    log_: Log,
    directory: GatewayDirectory,
    within: Within | None,
    signer: NamedKey,
) -> None:
    """Decide what arrives, one commit per group; return when the parent hangs up."""
    reader = FrameReader(sock)
    while frames := reader.read():
        for group in _commits(frames):
            replies: list[tuple[int, list[Verdict] | WriteFailed]] = []
            for run in _runs(group):
                replies += _commit(run, log_, directory, within, signer)
            sock.sendall(_frame(replies))


def within_all(*hooks: Within) -> Within:
    """One `within` hook that runs each of `hooks` in turn, in the append's transaction."""

    def within(
        conn: Connection,
        submissions: Sequence[Submission],
        outcomes: list[Appended | ConflictError],
    ) -> None:
        for hook in hooks:
            hook(conn, submissions, outcomes)

    return within


def main() -> None:
    """`python -m gateway.writer FD`: serve on the inherited socket FD."""
    import logging.config

    from gateway.config import Settings, settle_heap
    from gateway.directory import Directory as GatewayDirectory
    from gateway.logs import log_config
    from gateway.readings import ReadingIndex
    from gateway.rollups import Rollups
    from ledger.storage import open_engine

    settings = Settings.from_env()  # checked by the HTTP process that started this one
    logging.config.dictConfig(log_config(settings.log_format, settings.log_level))
    # Ctrl-C at a terminal and systemd's stop signal reach the whole process group; the
    # writer stops when its parent hangs up instead, after committing what it has read.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    # The parent migrated, and its sealer checkpoints the WAL: no commit here pays for it.
    # No ping per checkout (two round trips a commit on PostgreSQL): a commit that meets a
    # connection gone stale fails like any other, its clients get a 503 and resend.
    engine = open_engine(os.environ[URL_VARIABLE], migrate=False, autocheckpoint=False, ping=False)
    ledger_log = Log(engine=engine, signer=None, origin="writer")  # appends only, no seals
    signer = NamedKey.from_text(os.environ[REGISTRY_VARIABLE])
    directory = GatewayDirectory(engine, registry_key=signer.public_key_b64)
    settle_heap()  # as in the HTTP process
    try:
        hooks = [ReadingIndex(engine, directory).write]
        if os.environ.get(ROLLUPS_VARIABLE) != "0":
            hooks.append(Rollups(engine, directory).write)
        serve(sock, ledger_log, directory, within_all(*hooks), signer)
    finally:
        engine.dispose()


# -- the HTTP process's end -------------------------------------------------------------


class WriterClient:
    """Sends batches to the writer and resolves each batch's future from its reply.

    Runs on the event loop; `submit` may be called from any thread. If the writer dies,
    what it had not answered fails with WriterUnavailable and a new writer is started.
    """

    def __init__(
        self, *, database_url: str, registry_key: NamedKey, after_commit: AfterCommit | None = None
    ) -> None:
        self.database_url = database_url
        self.registry_key = registry_key
        self.after_commit = after_commit
        self._pending: dict[int, asyncio.Future[list[Verdict]]] = {}
        self._next_batch = 0
        self._closing = False
        self._restarts = 0  # in a row, without a reply in between
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the writer process and the task that reads its replies."""
        self._loop = asyncio.get_running_loop()
        reader = await self._spawn()
        self._reader_task = asyncio.create_task(self._read_replies(reader))

    async def _spawn(self) -> asyncio.StreamReader:
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        env = {
            **os.environ,
            URL_VARIABLE: self.database_url,
            REGISTRY_VARIABLE: self.registry_key.to_text(),
        }
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.writer", str(theirs.fileno()),
            pass_fds=(theirs.fileno(),), env=env,
        )  # fmt: skip
        theirs.close()
        reader, self._stream = await asyncio.open_connection(sock=ours, limit=SOCKET_BUFFER)
        return reader

    @property
    def in_flight(self) -> int:
        """Batches sent and not answered yet (the writer's queue)."""
        return len(self._pending)

    async def request(self, request: Request) -> list[Verdict]:
        """Its envelopes' verdicts in order, once they are committed (on the event loop)."""
        assert self._loop is not None, "WriterClient.start was not awaited"
        future: asyncio.Future[list[Verdict]] = self._loop.create_future()
        if self._closing or self._stream is None or self._stream.is_closing():
            raise WriterUnavailable("the writer is not running; retry")
        batch = self._next_batch
        self._next_batch += 1
        self._pending[batch] = future
        self._stream.write(_frame((batch, request)))
        return await future

    def submit(self, request: Request) -> Future[list[Verdict]]:
        """The same from another thread: a future that resolves after the commit."""
        assert self._loop is not None, "WriterClient.start was not awaited"
        return asyncio.run_coroutine_threadsafe(self.request(request), self._loop)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                header = await reader.readexactly(HEADER.size)
                replies = pickle.loads(await reader.readexactly(HEADER.unpack(header)[0]))
            except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError,
                    AttributeError, ImportError) as exc:  # fmt: skip
                if self._closing:
                    return
                if not isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                    # A reply this process cannot read: start over rather than leave every
                    # later request waiting for an answer that will never be read.
                    log.exception("unreadable reply from the writer")
                    if self._process is not None:
                        self._process.kill()
                restarted = await self._restart()
                if restarted is None:
                    return
                reader = restarted
                continue
            self._restarts = 0
            for batch, result in replies:
                future = self._pending.pop(batch)
                if isinstance(result, WriteFailed):
                    if not future.done():
                        future.set_exception(WriterUnavailable(result.reason))
                    continue
                if not future.done():
                    future.set_result(result)
                if self.after_commit is not None:
                    try:
                        self.after_commit(result)
                    except Exception:  # metrics and wake-ups only
                        log.exception("after-commit hook failed")

    async def _restart(self) -> asyncio.StreamReader | None:
        code = await self._process.wait() if self._process else None
        # A writer that cannot start (the database is gone) is retried, not spun on.
        delay = min(RESTART_MAX_DELAY, 0.1 * 2**self._restarts)
        self._restarts += 1
        log.error("the writer exited (code %s); starting a new one in %.1f s", code, delay)
        failed = WriterUnavailable("the writer restarted before this commit was confirmed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failed)
        self._pending.clear()
        if self._stream is not None:
            self._stream.close()
        await asyncio.sleep(delay)
        return None if self._closing else await self._spawn()

    async def close(self) -> None:
        """Let the writer finish what it has, then stop it."""
        self._closing = True
        if self._stream is not None and not self._stream.is_closing():
            self._stream.write_eof()  # the writer commits what it read, then exits
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), timeout=30)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._reader_task is not None:  # it has read the last replies when it ends
            try:
                await asyncio.wait_for(self._reader_task, timeout=5)
            except TimeoutError:
                log.error("the writer's last replies did not arrive")
        if self._stream is not None:
            self._stream.close()


if __name__ == "__main__":
    main()
