"""The auditor: replays a log's checkpoints, consistency proofs, anchors and entries.

It works on any `AuditSource` (the gateway's HTTP API, or the database directly) and trusts
nothing the source says that the pinned log key, the RFC 9162 proofs, the device keys or the
chain do not vouch for. The first false claim is reported as a `Finding`:
`TAMPER DETECTED: entry 1234 ...` or `TAMPER DETECTED: checkpoint 2048 ...`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

import nacl.exceptions
import nacl.signing

from ledger import merkle, registry_replay
from ledger.encoding import b64decode, canonical_json, hexdecode, parse_json, rfc3339_utc
from ledger.errors import FormatError, LedgerError, VerificationError
from ledger.merkle import NodeId
from ledger.note import Checkpoint, NoteVerifier

if TYPE_CHECKING:
    from web3 import Web3

    from ledger.log import Log

STATE_FORMAT = "patio-audit-state/v1"
REPORT_FORMAT = "patio-audit-report/v1"
ENTRY_VERSION = 1  # DESIGN.md pinned format 4
ENTRY_KEYS = frozenset({"v", "contract", "payload", "sig", "received_at"})
PAGE = 1000
MAX_FINDINGS = 100
# Below this many entries a worker pool costs more to start than it saves.
PARALLEL_THRESHOLD = 20_000


class SourceError(LedgerError):
    """The audit source could not be read (unreachable, refused, or answered nonsense)."""


# -- what a source serves ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AnchorClaim:
    """An anchor a source lists for a checkpoint."""

    chain_id: int
    tx_hash: str
    block_number: int | None
    contract: str | None
    tree_size: int
    root: bytes
    status: str = "confirmed"


@dataclass(frozen=True, kw_only=True)
class SourceCheckpoint:
    """A checkpoint note as served, with the anchors listed for it."""

    note: str
    anchors: Sequence[AnchorClaim] = ()


@dataclass(frozen=True, kw_only=True)
class SourceEntry:
    """One entry as served: its exact bytes (from a database) or its JSON object (over HTTP).

    `device_keys` are the keys its device may have signed with (one, or several after a
    rotation); `leaf_hash` is the hash the log recorded at append, if the source says.
    """

    index: int
    data: bytes | None = None
    obj: Mapping[str, Any] | None = None
    device_keys: Sequence[str] = ()
    leaf_hash: bytes | None = None


class AuditSource(Protocol):
    """Where the auditor reads a log from."""

    description: str

    def checkpoints(self, *, after: int) -> Iterator[SourceCheckpoint]:
        """Checkpoints with tree size above `after`, oldest first."""
        ...

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint note, or None if there is none."""
        ...

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 PROOF(first, D[0:second]) between two checkpointed sizes."""
        ...

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes] | None:
        """RFC 9162 PATH(index, D[0:tree_size]), or None if the source cannot give one."""
        ...

    def entries(self, *, start: int, end: int) -> Iterator[Sequence[SourceEntry]]:
        """Pages of entries with index in [start, end), in index order."""
        ...


# -- findings and state -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One piece of evidence that the log was tampered with."""

    kind: Literal["entry", "checkpoint", "community", "device"]
    subject: int | str  # the entry index, the checkpoint's tree size, or the id
    message: str

    def line(self) -> str:
        """The line printed for it."""
        return f"TAMPER DETECTED: {self.kind} {self.subject} {self.message}"


@dataclass(frozen=True, kw_only=True)
class AuditState:
    """What an earlier audit established: the newest checkpoint it verified."""

    log_key: str
    origin: str
    tree_size: int
    root_hash: bytes
    checkpoint: str

    @classmethod
    def load(cls, path: Path) -> AuditState | None:
        """Read a state file; None if it does not exist yet."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FormatError(f"cannot read audit state {path}: {exc.strerror}") from exc
        obj = parse_json(text, what=f"audit state {path}")
        if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
            raise FormatError(f"{path} is not a {STATE_FORMAT} file")
        try:
            return cls(
                log_key=str(obj["log_key"]),
                origin=str(obj["origin"]),
                tree_size=int(obj["tree_size"]),
                root_hash=hexdecode(obj["root_hash"], what="state root_hash", length=32),
                checkpoint=str(obj["checkpoint"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"audit state {path} is incomplete: {exc}") from exc

    def save(self, path: Path) -> None:
        """Write the state file atomically."""
        obj = {
            "format": STATE_FORMAT,
            "log_key": self.log_key,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "checkpoint": self.checkpoint,
            "saved_at": rfc3339_utc(datetime.now(UTC)),
        }
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(temporary, path)


@dataclass(kw_only=True)
class AuditReport:
    """What one audit checked and found."""

    source: str
    log_key: str
    full: bool
    started_at: str
    finished_at: str = ""
    origin: str | None = None
    tree_size: int = 0
    root_hash: str | None = None
    previous_tree_size: int | None = None
    checkpoints_checked: int = 0
    consistency_proofs_checked: int = 0
    anchors_checked: int = 0
    anchors_checked_on_chain: int = 0
    entries_checked: int = 0
    device_signatures_checked: int = 0
    seconds: float = 0.0
    registry: str | None = None  # the registry replay's summary line (ledger.registry_replay)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No finding."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """The JSON report."""
        obj = asdict(self)
        obj["findings"] = [asdict(f) | {"line": f.line()} for f in self.findings]
        rate = self.entries_checked / self.seconds if self.seconds > 0 else None
        return {"format": REPORT_FORMAT, "ok": self.ok, "entries_per_second": rate} | obj

    def summary(self) -> str:
        """A few lines for a human."""
        lines = [f"audit of {self.origin or '?'} via {self.source}"]
        grew = (
            f" (was {self.previous_tree_size})"
            if self.previous_tree_size is not None
            else " (first audit)"
        )
        lines.append(f"  tree size {self.tree_size}{grew}, root {self.root_hash or '-'}")
        lines.append(
            f"  {self.checkpoints_checked} checkpoint signature(s), "
            f"{self.consistency_proofs_checked} consistency proof(s), "
            f"{self.anchors_checked} anchor(s) ({self.anchors_checked_on_chain} on chain)"
        )
        if self.full:
            rate = self.entries_checked / self.seconds if self.seconds > 0 else 0.0
            lines.append(
                f"  {self.entries_checked} entries replayed, "
                f"{self.device_signatures_checked} device signature(s), "
                f"{rate:,.0f} entries/s (entries after the newest checkpoint wait for the next)"
            )
        if self.registry is not None:
            lines.append(f"  {self.registry}")
        lines.extend(f.line() for f in self.findings)
        lines.append("OK: no tampering found" if self.ok else f"{len(self.findings)} finding(s)")
        return "\n".join(lines)


class _Stop(Exception):
    """Ends a replay at the first finding that makes the rest meaningless."""


# -- entry checks (run in worker processes on large logs) -------------------------------


@dataclass(frozen=True)
class _Checked:
    leaves: list[bytes]
    findings: list[Finding]
    signatures: int


def _check_entries(batch: Sequence[SourceEntry]) -> _Checked:
    """Leaf hashes of a batch, and any entry that breaks pinned formats 2, 4 or 5."""
    leaves: list[bytes] = []
    findings: list[Finding] = []
    signatures = 0
    keys: dict[str, Callable[[bytes], bytes]] = {}
    sha256 = hashlib.sha256
    for item in batch:
        try:
            data, signed, signature, device = _entry_parts(item)
        except FormatError as exc:
            findings.append(Finding(kind="entry", subject=item.index, message=str(exc)))
            leaves.append(sha256(b"\x00" + (item.data or b"")).digest())
            continue
        leaf = sha256(b"\x00" + data).digest()  # RFC 9162 2.1.1 leaf hash
        leaves.append(leaf)
        if item.leaf_hash is not None and leaf != item.leaf_hash:
            findings.append(
                Finding(
                    kind="entry",
                    subject=item.index,
                    message=f"does not hash to its log tag id c274b5{item.leaf_hash.hex()}: "
                    "its bytes were changed after it was appended",
                )
            )
        if not item.device_keys:
            continue
        signatures += 1
        problem = "does not verify"
        for text in item.device_keys:
            try:
                verify = keys.get(text)
                if verify is None:
                    raw = b64decode(text, what="device key", length=32)
                    verify = keys[text] = nacl.signing.VerifyKey(raw).verify
                verify(signature + signed)  # libsodium's combined form: sig || message
                break
            except FormatError as exc:
                problem = str(exc)
            except nacl.exceptions.BadSignatureError:
                pass
        else:
            findings.append(
                Finding(
                    kind="entry",
                    subject=item.index,
                    message=f"has a bad device signature (device {device!r}): {problem}",
                )
            )
    return _Checked(leaves, findings, signatures)


# Contract names and receive times repeat (one receive time per group commit): encode once.
_repeated_json = functools.lru_cache(maxsize=4096)(canonical_json)


def _entry_parts(item: SourceEntry) -> tuple[bytes, bytes, bytes, Any]:
    """(entry bytes, payload bytes as signed, raw signature, device id); FormatError if bad."""
    if item.data is not None:
        try:
            # Plain parsing is enough: the bytes must equal the canonical layout below, and
            # a JCS text has no duplicate keys or NaN for a lenient parser to hide.
            obj = json.loads(item.data)
        except (ValueError, RecursionError) as exc:
            raise FormatError("is not valid JSON") from exc
    else:
        obj = item.obj
    if not isinstance(obj, Mapping) or obj.keys() != ENTRY_KEYS:
        raise FormatError(f"is not an entry object with keys {sorted(ENTRY_KEYS)}")
    contract, sig, received_at, payload = (
        obj["contract"],
        obj["sig"],
        obj["received_at"],
        obj["payload"],
    )
    if obj["v"] != ENTRY_VERSION or isinstance(obj["v"], bool):
        raise FormatError(f"has entry version {obj['v']!r}, not {ENTRY_VERSION}")
    if not (isinstance(contract, str) and isinstance(sig, str) and isinstance(received_at, str)):
        raise FormatError("has a non-string contract, sig or received_at")
    if not isinstance(payload, dict):
        raise FormatError("has a payload that is not a JSON object")
    signature = b64decode(sig, what="sig", length=64)
    # Pinned format 4: JCS members in UTF-16 order are contract, payload, received_at, sig, v.
    # Canonical base64 holds no character RFC 8785 section 3.2.2.2 escapes, so its JCS
    # string is the text in quotes.
    prefix = b'{"contract":' + _repeated_json(contract) + b',"payload":'
    suffix = b',"received_at":' + _repeated_json(received_at) + b',"sig":"' + sig.encode()
    suffix += b'","v":1}'
    if item.data is None:
        signed = canonical_json(payload)
        return prefix + signed + suffix, signed, signature, payload.get("device_id")
    data = item.data
    if not (data.startswith(prefix) and data.endswith(suffix)):
        raise FormatError("is not in canonical form (RFC 8785, pinned format 4)")
    signed = data[len(prefix) : len(data) - len(suffix)]
    # A device signs JCS(payload) (pinned format 2), so a good signature over these bytes
    # shows they are canonical; with no device key to check, compare with JCS directly.
    if not item.device_keys and canonical_json(payload) != signed:
        raise FormatError("has a payload not in canonical form (RFC 8785, pinned format 4)")
    return data, signed, signature, payload.get("device_id")


# -- the replayed tree ------------------------------------------------------------------


class _Replay:
    """The tree rebuilt from downloaded entries: a verified prefix's frontier plus a tail."""

    def __init__(self) -> None:
        self.size = 0
        self.nodes: dict[NodeId, bytes] = {}

    def fetch(self, wanted: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """A NodeFetcher over the nodes kept."""
        return {node: self.nodes[node] for node in wanted}

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append leaf hashes."""
        for level, (start, hashes) in merkle.new_nodes(self.size, leaves, self.fetch).items():
            for offset, value in enumerate(hashes):
                self.nodes[level, start + offset] = value
        self.size += len(leaves)

    def root(self) -> bytes:
        """MTH of everything appended."""
        return merkle.tree_root(self.size, self.fetch)

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end) (KeyError if a needed node was pruned)."""
        return merkle.range_hash(start, end, self.nodes)

    def prune(self) -> None:
        """Keep only the frontier: all the next appends and range hashes need."""
        keep = merkle.range_nodes(0, self.size) if self.size else []
        self.nodes = {node: self.nodes[node] for node in keep}


# -- the auditor ------------------------------------------------------------------------


def _size_of(note: str) -> int:
    """The tree size a note claims, read without trusting it (only to name a finding)."""
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else -1


class Auditor:
    """Checks one log through one source against the pinned log key."""

    def __init__(
        self,
        *,
        source: AuditSource,
        log_key: str,
        chain: Callable[[], Web3] | None = None,
        min_confirmations: int = 1,
        contract: str | None = None,
        progress: Callable[[int, int, float], None] | None = None,
        workers: int | None = None,
        parallel_threshold: int = PARALLEL_THRESHOLD,
    ) -> None:
        self.source = source
        self.verifier = NoteVerifier.parse(log_key)
        self.log_key = str(self.verifier)
        self.chain = chain
        self._w3: Web3 | None = None
        self.min_confirmations = min_confirmations
        self.contract = contract
        self.progress = progress
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.parallel_threshold = parallel_threshold

    def run(self, *, state: AuditState | None = None, full: bool = False) -> Audit:
        """Audit once; findings go in the report, failures to reach the source raise."""
        if state is not None and state.log_key != self.log_key:
            raise FormatError("the audit state file belongs to another log key")
        started = time.monotonic()
        report = AuditReport(
            source=self.source.description,
            log_key=self.log_key,
            full=full,
            started_at=rfc3339_utc(datetime.now(UTC)),
            previous_tree_size=state.tree_size if state else None,
        )
        head: tuple[Checkpoint, str] | None = None
        try:
            checkpoints, head = self._checkpoints(report, state, full)
            if full and checkpoints:
                self._replay(report, checkpoints)
        except _Stop:
            pass
        # The directory must be what replaying the registry entries builds.
        root = bytes.fromhex(report.root_hash) if report.root_hash else None
        registry = registry_replay.audit(self.source, tree_size=report.tree_size, root=root)
        if registry is not None:
            report.registry = registry.summary()
            report.findings += [
                Finding(kind=k, subject=s, message=m) for k, s, m in registry.findings
            ]
        else:
            report.registry = "registry: not checked (no directory, or the key may not read it)"
        report.seconds = time.monotonic() - started
        report.finished_at = rfc3339_utc(datetime.now(UTC))
        new_state = state
        if report.ok and head is not None:
            checkpoint, note = head
            new_state = AuditState(
                log_key=self.log_key,
                origin=checkpoint.origin,
                tree_size=checkpoint.tree_size,
                root_hash=checkpoint.root_hash,
                checkpoint=note,
            )
        return Audit(report=report, state=new_state)

    # -- checkpoints and anchors --------------------------------------------------------

    @staticmethod
    def _fail(report: AuditReport, finding: Finding) -> NoReturn:
        report.findings.append(finding)
        raise _Stop

    @staticmethod
    def _note(report: AuditReport, finding: Finding) -> None:
        report.findings.append(finding)
        if len(report.findings) >= MAX_FINDINGS:
            raise _Stop

    def _open(self, report: AuditReport, note: str) -> Checkpoint:
        try:
            checkpoint = Checkpoint.open(note, self.verifier)
        except (FormatError, VerificationError) as exc:
            self._fail(
                report,
                Finding(kind="checkpoint", subject=_size_of(note), message=f"is invalid: {exc}"),
            )
        report.checkpoints_checked += 1
        if report.origin is None:
            report.origin = checkpoint.origin
        elif checkpoint.origin != report.origin:
            self._fail(
                report,
                Finding(
                    kind="checkpoint",
                    subject=checkpoint.tree_size,
                    message=f"names origin {checkpoint.origin!r}, not {report.origin!r}",
                ),
            )
        return checkpoint

    def _extends(
        self, report: AuditReport, older: Checkpoint, newer: Checkpoint, seen: str
    ) -> None:
        """Check that `newer` extends `older` (RFC 9162 2.1.4.2), or is the same tree."""
        if newer.tree_size == older.tree_size:
            if newer.root_hash != older.root_hash:
                self._fail(
                    report,
                    Finding(
                        kind="checkpoint",
                        subject=newer.tree_size,
                        message=f"has another root than the checkpoint of that size{seen}: "
                        "forked history",
                    ),
                )
            return
        try:
            proof = self.source.consistency_proof(older.tree_size, newer.tree_size)
            merkle.verify_consistency(
                older.tree_size, newer.tree_size, proof, older.root_hash, newer.root_hash
            )
        except LedgerError as exc:
            self._fail(
                report,
                Finding(
                    kind="checkpoint",
                    subject=newer.tree_size,
                    message=f"does not extend checkpoint {older.tree_size}{seen}: "
                    f"forked history ({exc})",
                ),
            )
        report.consistency_proofs_checked += 1

    def _checkpoints(
        self, report: AuditReport, state: AuditState | None, full: bool
    ) -> tuple[list[Checkpoint], tuple[Checkpoint, str] | None]:
        """Verify every served checkpoint and that each extends the one before it."""
        previous = Checkpoint.open(state.checkpoint, self.verifier) if state else None
        if previous is not None:
            report.origin = previous.origin
        # Incremental audits start at the audited size itself, to catch a changed root there.
        after = -1 if full or previous is None else previous.tree_size - 1
        verified: list[Checkpoint] = []
        notes: dict[int, str] = {}
        claims: list[tuple[Checkpoint, AnchorClaim]] = []
        for item in self.source.checkpoints(after=after):
            checkpoint = self._open(report, item.note)
            if verified and checkpoint.tree_size <= verified[-1].tree_size:
                self._fail(
                    report,
                    Finding(
                        kind="checkpoint",
                        subject=checkpoint.tree_size,
                        message=f"is listed after checkpoint {verified[-1].tree_size}",
                    ),
                )
            verified.append(checkpoint)
            notes[checkpoint.tree_size] = item.note
            claims.extend((checkpoint, claim) for claim in item.anchors)
        latest_note = self.source.latest_checkpoint()
        if latest_note is not None:
            latest = self._open(report, latest_note)
            if not verified or latest.tree_size > verified[-1].tree_size:
                verified.append(latest)
                notes[latest.tree_size] = latest_note
            elif latest.tree_size < verified[-1].tree_size:
                self._fail(
                    report,
                    Finding(
                        kind="checkpoint",
                        subject=latest.tree_size,
                        message="is served as the latest, but checkpoint "
                        f"{verified[-1].tree_size} exists",
                    ),
                )
            else:
                self._extends(report, verified[-1], latest, "")

        if previous is not None and state is not None:
            if not verified or verified[-1].tree_size < previous.tree_size:
                served = verified[-1].tree_size if verified else 0
                self._fail(
                    report,
                    Finding(
                        kind="checkpoint",
                        subject=served,
                        message=f"is the newest served, older than checkpoint "
                        f"{previous.tree_size} seen earlier: the log was rolled back",
                    ),
                )
            first = next(c for c in verified if c.tree_size >= previous.tree_size)
            self._extends(report, previous, first, " seen earlier")
        for older, newer in itertools.pairwise(verified):
            self._extends(report, older, newer, "")

        for checkpoint, claim in claims:
            self._check_anchor(report, checkpoint, claim)
        if verified:
            head = verified[-1]
            report.tree_size, report.root_hash = head.tree_size, head.root_hash.hex()
            return verified, (head, notes[head.tree_size])
        if previous is not None and state is not None:
            report.tree_size, report.root_hash = previous.tree_size, previous.root_hash.hex()
            return [], (previous, state.checkpoint)
        return [], None

    def _check_anchor(
        self, report: AuditReport, checkpoint: Checkpoint, claim: AnchorClaim
    ) -> None:
        subject = f"anchor {claim.tx_hash} on chain {claim.chain_id}"
        report.anchors_checked += 1
        if claim.tree_size != checkpoint.tree_size or claim.root != checkpoint.root_hash:
            self._note(
                report,
                Finding(
                    kind="checkpoint",
                    subject=checkpoint.tree_size,
                    message=f"{subject} records root {claim.root.hex()} at size "
                    f"{claim.tree_size}, not the checkpoint's root {checkpoint.root_hash.hex()}",
                ),
            )
            return
        if self.chain is None or claim.status != "confirmed":
            return
        from ledger.anchor_verify import check_anchor_on_chain

        if self._w3 is None:
            self._w3 = self.chain()
        try:
            check_anchor_on_chain(
                self._w3,
                chain_id=claim.chain_id,
                tx_hash=claim.tx_hash,
                block_number=claim.block_number,
                contract=claim.contract,
                tree_size=claim.tree_size,
                root=claim.root,
                origin=checkpoint.origin,
                configured_contract=self.contract,
                min_confirmations=self.min_confirmations,
                what=subject,
            )
        except (VerificationError, FormatError) as exc:
            message = exc.message if isinstance(exc, VerificationError) else str(exc)
            self._note(
                report, Finding(kind="checkpoint", subject=checkpoint.tree_size, message=message)
            )
            return
        report.anchors_checked_on_chain += 1

    # -- entries ------------------------------------------------------------------------

    def _replay(self, report: AuditReport, checkpoints: list[Checkpoint]) -> None:
        """Download every sealed entry, rebuild the tree and compare it at each checkpoint."""
        end = checkpoints[-1].tree_size
        boundaries = deque(c for c in checkpoints if c.tree_size > 0)
        replay = _Replay()
        started = last_progress = time.monotonic()
        pool = (
            ProcessPoolExecutor(max_workers=self.workers)
            if self.workers > 1 and end >= self.parallel_threshold
            else None
        )
        try:
            for checked, batch in self._checked_pages(pool, end):
                for position, item in enumerate(batch):
                    if item.index != replay.size + position:
                        self._fail(report, _missing(replay.size + position, item.index))
                for finding in checked.findings:
                    self._note(report, finding)
                report.device_signatures_checked += checked.signatures
                self._fold(report, replay, checked.leaves, boundaries)
                report.entries_checked = replay.size
                now = time.monotonic()
                if self.progress is not None and now - last_progress >= 2.0:
                    self.progress(replay.size, end, now - started)
                    last_progress = now
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        if replay.size < end:
            self._fail(report, _missing(replay.size, None))

    def _checked_pages(
        self, pool: ProcessPoolExecutor | None, end: int
    ) -> Iterator[tuple[_Checked, Sequence[SourceEntry]]]:
        pages = self.source.entries(start=0, end=end)
        if pool is None:
            for page in pages:
                yield _check_entries(page), page
            return
        # A few pages in flight, so that downloading and checking overlap.
        window: deque[tuple[Future[_Checked], Sequence[SourceEntry]]] = deque()
        for page in pages:
            window.append((pool.submit(_check_entries, page), page))
            if len(window) > 2 * self.workers:
                future, done = window.popleft()
                yield future.result(), done
        while window:
            future, done = window.popleft()
            yield future.result(), done

    def _fold(
        self,
        report: AuditReport,
        replay: _Replay,
        leaves: list[bytes],
        boundaries: deque[Checkpoint],
    ) -> None:
        """Append leaves, stopping at each checkpoint's size to compare roots."""
        position = 0
        while position < len(leaves):
            room = len(leaves) - position
            if boundaries and boundaries[0].tree_size - replay.size <= room:
                checkpoint = boundaries.popleft()
                take = checkpoint.tree_size - replay.size
                replay.extend(leaves[position : position + take])
                position += take
                if replay.root() != checkpoint.root_hash:
                    self._fail(report, self._locate(replay, checkpoint))
                replay.prune()
            else:
                replay.extend(leaves[position:])
                position = len(leaves)

    def _locate(self, replay: _Replay, checkpoint: Checkpoint) -> Finding:
        """Name the first entry whose bytes differ from what `checkpoint` signed.

        Descends from the signed root: at each node, the source's inclusion proofs give both
        children's hashes, which must fold to the (already trusted) parent and so are
        trusted too; the child whose replayed hash differs holds the changed entry.
        """
        n = checkpoint.tree_size
        start, end, trusted = 0, n, checkpoint.root_hash
        proofs: dict[int, dict[tuple[int, int], bytes]] = {}

        def claimed(index: int, wanted: tuple[int, int]) -> bytes | None:
            if index not in proofs:
                path = self.source.inclusion_proof(index, n)
                if path is None:
                    return None
                ranges = merkle.inclusion_ranges(index, n)
                proofs[index] = dict(zip(ranges, path, strict=False))
            return proofs[index].get(wanted)

        unlocated = Finding(
            kind="checkpoint",
            subject=n,
            message="does not match the entries served: an entry before it was changed, "
            "inserted or removed",
        )
        try:
            while end - start > 1:
                middle = start + merkle.split_point(end - start)
                left = claimed(middle, (start, middle))
                right = claimed(start, (middle, end))
                if left is None or right is None or merkle.node_hash(left, right) != trusted:
                    return unlocated
                if replay.range_hash(start, middle) != left:
                    end, trusted = middle, left
                elif replay.range_hash(middle, end) != right:
                    start, trusted = middle, right
                else:
                    return unlocated
        except (KeyError, LedgerError):
            return unlocated
        return Finding(
            kind="entry",
            subject=start,
            message=f"does not match what checkpoint {n} signed: its bytes were changed",
        )


@dataclass(frozen=True, kw_only=True)
class Audit:
    """One audit's report and the state to keep for the next (unchanged after a finding)."""

    report: AuditReport
    state: AuditState | None


def _missing(expected: int, got: int | None) -> Finding:
    message = (
        "is missing from the log: the source skips to entry " + str(got)
        if got is not None
        else "is missing from the log: the source ends before the checkpoint's size"
    )
    return Finding(kind="entry", subject=expected, message=message)


# -- the database as a source -----------------------------------------------------------


class LocalSource:
    """The log read straight from its database (`patio audit --local`)."""

    def __init__(self, log: Log, *, device_keys: Mapping[str, Sequence[str]] | None = None) -> None:
        self.log = log
        self.device_keys = {d: tuple(k) for d, k in (device_keys or {}).items()}
        self.description = f"database {log.engine.url.render_as_string(hide_password=True)}"

    def checkpoints(self, *, after: int) -> Iterator[SourceCheckpoint]:
        """Checkpoints after `after` with their anchors."""
        by_size: dict[int, list[AnchorClaim]] = {}
        for a in self.log.anchors():
            by_size.setdefault(a.tree_size, []).append(
                AnchorClaim(
                    chain_id=a.chain_id,
                    tx_hash=a.tx_hash,
                    block_number=a.block_number,
                    contract=a.contract,
                    tree_size=a.tree_size,
                    root=a.root_hash,
                    status=a.status,
                )
            )
        while True:
            page = self.log.checkpoints(after=after, limit=PAGE)
            for stored in page:
                yield SourceCheckpoint(note=stored.note, anchors=by_size.get(stored.tree_size, []))
            if len(page) < PAGE:
                return
            after = page[-1].tree_size

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint note."""
        latest = self.log.latest_checkpoint()
        return latest.note if latest else None

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """From the stored Merkle nodes."""
        return self.log.consistency_proof(first, second)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes] | None:
        """From the stored Merkle nodes."""
        return self.log.inclusion_proof(index, tree_size)

    def entries(self, *, start: int, end: int) -> Iterator[Sequence[SourceEntry]]:
        """Stored entry bytes and leaf hashes, a page at a time."""
        from sqlalchemy import select

        from ledger.storage import entries

        keys = self.device_keys
        columns = (entries.c.idx, entries.c.entry, entries.c.device_id, entries.c.leaf_hash)
        while start < end:
            query = (
                select(*columns)
                .where(entries.c.idx >= start, entries.c.idx < end)
                .order_by(entries.c.idx)
                .limit(PAGE)
            )
            with self.log.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            yield [
                SourceEntry(
                    index=index,
                    data=bytes(data),
                    device_keys=keys.get(device, ()) if device else (),
                    leaf_hash=bytes(leaf),
                )
                for index, data, device, leaf in rows
            ]
            start = rows[-1][0] + 1
