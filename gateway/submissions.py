"""The one contract path every transport uses (HTTP batches, /api, MQTT ingest).

Transports hand requests to the writer process (gateway.writer), which runs `decide`:
contract admission (schema, device key, signature) and the group commit both happen
there, on the other core, so the HTTP process only parses and answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sqlalchemy import Connection

from contracts.base import Checked, Context, ContractError, Directory, EnvelopeContract
from contracts.device_registry import REGISTRY_DEVICE, RegistryChange, RegistryContract
from contracts.registry import CONTRACTS
from gateway.directory import TableView
from gateway.logs import log_deliveries
from ledger.errors import ConflictError, LedgerError
from ledger.keys import NamedKey
from ledger.log import Appended, Log, Submission, Within
from ledger.registry_replay import RegistryError, StaleChange
from ledger.storage import DriverCursor

if TYPE_CHECKING:
    from gateway.writer import WriterClient

MAX_BATCH = 1_000
# Signatures are checked in the HTTP process, which has CPU to spare while the writer, which
# then only confirms the key, has not (A/B at saturation: 2,540-3,327/s against
# 2,317-2,720/s). Up to this many envelopes on the event loop; a bigger batch on a worker
# thread, as it would hold the loop for milliseconds (libsodium releases the GIL).
INLINE_PRECHECK = 4
# A bigger batch is prechecked and sent to the writer this many envelopes at a time.
PRECHECK_CHUNK = 100


class UnknownContract(LookupError):
    """No envelope contract of that name."""


class Refused(Exception):
    """A Restroom request its contract refused, or a conflicting resend."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.result["error"])
        self.verdict = verdict


# The writer's requests and replies are named tuples: they cross a process boundary for
# every request, and a tuple pickles in a third of a dataclass's time.


class Admit(NamedTuple):
    """Envelopes for a contract to admit, then record (the writer's usual request)."""

    contract: str
    envelopes: Sequence[Any]  # None where `verified` has the envelope (no second copy)
    now: float  # the request's time, POSIX seconds
    community: str | None = None  # set when the transport already names the community
    restroom: bool = False  # each envelope is a whole Restroom request {data, keys}
    verified: Sequence[Checked | None] = ()  # per envelope: what its precheck admitted


class WriteFailed(NamedTuple):
    """A commit failed in the writer (the database refused or went away).

    Defined here, not in gateway.writer: the writer runs as `__main__`, and a class of
    `__main__` pickles under a name the HTTP process cannot load.
    """

    reason: str


class Verdict(NamedTuple):
    """One envelope's fate: its result as transports answer it, and how it was recorded."""

    result: dict[str, Any]  # status, log_tag_id, error, code
    contract: str
    recorded: Literal["accepted", "duplicate", "conflict"] | None = None
    title: str | None = None  # a refusal's title, for a problem document
    response: dict[str, Any] | None = None  # the contract's Restroom response


def envelope_contract(name: str) -> EnvelopeContract:
    """The envelope contract called `name`."""
    contract = CONTRACTS.get(name)
    if not isinstance(contract, EnvelopeContract):
        raise UnknownContract(f"no contract {name!r} that accepts signed envelopes")
    return contract


def _refused(exc: ContractError | LedgerError, contract: str) -> Verdict:
    if isinstance(exc, ContractError):
        status, title = exc.status, exc.title
    else:
        status, title = 422, "Invalid request"
    result = {"status": "rejected", "log_tag_id": None, "error": str(exc), "code": status}
    return Verdict(result=result, contract=contract, title=title)


def _recorded(outcome: Appended | ConflictError, contract: str) -> Verdict:
    if isinstance(outcome, ConflictError):
        result = {
            "status": "rejected",
            "log_tag_id": outcome.log_tag_id,
            "error": f"conflict: {outcome}",
            "code": 409,
            # Which rule it broke, and where the device stands in the log: what a device that
            # lost its own count needs to continue (docs/edge-recovery.md).
            "rule": outcome.rule,
            "last_seq": outcome.last_seq,
            "last_start": outcome.last_start,
        }
        return Verdict(result=result, contract=contract, recorded="conflict", title="Conflict")
    result = {
        "status": outcome.status,
        "log_tag_id": outcome.entry.log_tag_id,
        "error": None,
        "code": 201 if outcome.status == "accepted" else 200,
    }
    return Verdict(result=result, contract=contract, recorded=outcome.status)


def decide(
    requests: Sequence[Admit],
    *,
    log: Log,
    directory: Directory,
    within: Within | None = None,
) -> list[list[Verdict]]:
    """Admit every request's envelopes, record the admitted ones in one commit, in order."""
    slots: list[list[tuple[str, ContractError | LedgerError | Submission]]] = []
    admitted: list[Submission] = []
    for request in requests:
        row: list[tuple[str, ContractError | LedgerError | Submission]] = []
        contract = envelope_contract(request.contract)
        now = datetime.fromtimestamp(request.now, UTC)
        context = Context(directory=directory, log=log, now=now, community=request.community)
        admit = contract.admit_request if request.restroom else contract.admit
        verified = request.verified or [None] * len(request.envelopes)
        tag = contract.tag
        for envelope, checked in zip(request.envelopes, verified, strict=True):
            try:
                if checked is None:
                    row.append((tag, admit(envelope, context)))
                else:
                    row.append((tag, contract.confirm(checked, context)))
            except (ContractError, LedgerError) as exc:
                row.append((tag, exc))
        admitted += [item for _, item in row if isinstance(item, Submission)]
        slots.append(row)
    outcomes = iter(log.append(admitted, within=within) if admitted else [])
    verdicts = []
    for request, row in zip(requests, slots, strict=True):
        answers = []
        for tag, item in row:
            if not isinstance(item, Submission):
                answers.append(_refused(item, tag))
                continue
            outcome = next(outcomes)
            verdict = _recorded(outcome, tag)
            if request.restroom and isinstance(outcome, Appended):
                response = envelope_contract(request.contract).respond(outcome, item)
                verdict = verdict._replace(response=response)
            answers.append(verdict)
        verdicts.append(answers)
    return verdicts


REGISTRY = RegistryContract()
# A change planned against a state another gateway process changed is planned again; each
# failed attempt means another change was committed, so this bounds nothing in practice.
CHANGE_ATTEMPTS = 50
logger = logging.getLogger(__name__)
CHANGE_TITLES = {404: "Not found", 409: "Conflict", 422: "Invalid request"}


def change_registry(change: RegistryChange, *, log: Log, signer: NamedKey) -> Verdict:
    """Append a registry entry and make its change in the directory in one transaction.

    The registry contract checks the change inside that transaction (on PostgreSQL under
    the append lock, on SQLite under the write lock), so of concurrent registrations of an
    id exactly one is recorded, and a refused change, or one whose commit fails, leaves no
    entry behind.
    """
    for _ in range(CHANGE_ATTEMPTS):
        try:
            return _append_change(change, log=log, signer=signer)
        except StaleChange as exc:
            logger.info("registry change planned again: %s", exc)  # another process's change
            continue
        except RegistryError as exc:
            return _refused_change(exc)
    return _refused_change(
        RegistryError("the registry is being changed concurrently; retry", status=503)
    )


def _append_change(change: RegistryChange, *, log: Log, signer: NamedKey) -> Verdict:
    with log.engine.connect() as conn:
        seq = 1 + DriverCursor(conn).scalar(
            "SELECT coalesce(max(seq), 0) FROM entries WHERE device_id = ?", (REGISTRY_DEVICE,)
        )
        subject = REGISTRY.subject(change, TableView(conn))
    submission = REGISTRY.submission(
        signer=signer, seq=seq, action=change.action, subject=subject, at=change.at
    )

    def within(conn: Connection, _: Any, outcomes: list[Appended | ConflictError]) -> None:
        [outcome] = outcomes
        if not (isinstance(outcome, Appended) and outcome.status == "accepted"):
            # Another gateway process took this seq meanwhile: roll back (with the conflict
            # evidence the append wrote) and plan again.
            raise StaleChange(f"registry seq {seq} was taken concurrently")
        view = TableView(conn)
        REGISTRY.check(change.action, subject, view)
        view.write(change.action, subject, change.at)

    [outcome] = log.append([submission], within=within)
    assert isinstance(outcome, Appended)
    result = {"status": "accepted", "log_tag_id": outcome.entry.log_tag_id, "error": None,
              "code": 201}  # fmt: skip
    return Verdict(
        result=result,
        contract=REGISTRY.tag,
        recorded="accepted",
        response={"subject": subject, "at": change.at},
    )


def _refused_change(exc: RegistryError) -> Verdict:
    result = {"status": "rejected", "log_tag_id": None, "error": exc.detail, "code": exc.status}
    title = CHANGE_TITLES.get(exc.status, "Busy")
    return Verdict(result=result, contract=REGISTRY.tag, title=title)


class Submissions:
    """The transports' entry point: checks the contract name, asks the writer, answers."""

    def __init__(self, *, writer: WriterClient, directory: Directory) -> None:
        self.writer = writer
        self.directory = directory

    def submit(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """Blocking (any thread but the event loop's): results in order, after the commit."""
        checker = envelope_contract(contract)
        now = time.time()
        request = self._admit(checker, envelopes, now, community)
        results = [v.result for v in self.writer.submit(request).result()]
        log_deliveries(checker.name, envelopes, results)
        return results

    async def submit_async(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """The same, for request handlers.

        A big batch goes to the writer in chunks, each as soon as it is prechecked, so the
        writer admits one chunk while this process checks the next. Chunks go in order, so
        a device's entries keep their order; if one fails, the request fails, and a resend
        finds what was committed as duplicates.
        """
        checker = envelope_contract(contract)
        now = time.time()
        if len(envelopes) <= INLINE_PRECHECK:
            admit = self._admit(checker, envelopes, now, community)
            results = [v.result for v in await self.writer.request(admit)]
            log_deliveries(checker.name, envelopes, results)
            return results
        sent = []
        for start in range(0, len(envelopes), PRECHECK_CHUNK):
            chunk = envelopes[start : start + PRECHECK_CHUNK]
            admit = await asyncio.to_thread(self._admit, checker, chunk, now, community)
            sent.append(asyncio.ensure_future(self.writer.request(admit)))
        results = []
        for reply in await asyncio.gather(*sent, return_exceptions=True):
            if isinstance(reply, BaseException):
                raise reply
            results += [verdict.result for verdict in reply]
        log_deliveries(checker.name, envelopes, results)
        return results

    def _admit(
        self,
        contract: EnvelopeContract,
        envelopes: Sequence[Any],
        now: float,
        community: str | None,
    ) -> Admit:
        """The writer's request: each envelope prechecked here, sent as what its precheck
        admitted or, when it did not, as it came (the writer then decides it in full)."""
        moment = datetime.fromtimestamp(now, UTC)
        verified = [contract.precheck(envelope, self.directory, moment) for envelope in envelopes]
        unchecked = [
            None if checked else envelope
            for envelope, checked in zip(envelopes, verified, strict=True)
        ]
        return Admit(contract.name, unchecked, now, community, verified=verified)

    async def run_one(self, contract: EnvelopeContract, request: Any) -> dict[str, Any]:
        """One Restroom request through an envelope contract: its response, or Refused."""
        admit = Admit(contract=contract.name, envelopes=[request], now=time.time(),
                      restroom=True)  # fmt: skip
        [verdict] = await self.writer.request(admit)
        log_deliveries(contract.name, [request], [verdict.result])
        if verdict.response is None:
            raise Refused(verdict)
        return verdict.response
