"""The one contract path every transport uses (HTTP batches, /api, MQTT ingest)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from contracts.base import Context, ContractError, Directory, EnvelopeContract
from contracts.registry import CONTRACTS
from gateway.committer import GroupCommitter, Outcome
from ledger.errors import ConflictError, LedgerError
from ledger.log import Appended, Log, Submission

MAX_BATCH = 1_000
# Up to this many envelopes are checked on the event loop (~0.15 ms each); a thread hop
# costs more than that.
INLINE_ENVELOPES = 4


class UnknownContract(LookupError):
    """No envelope contract of that name."""


def result(outcome: Outcome | ContractError | LedgerError) -> dict[str, Any]:
    """One envelope's result as the HTTP and MQTT answers carry it."""
    if isinstance(outcome, Appended):
        return {
            "status": outcome.status,
            "log_tag_id": outcome.entry.log_tag_id,
            "error": None,
            "code": 201 if outcome.status == "accepted" else 200,
        }
    if isinstance(outcome, ConflictError):
        return {
            "status": "rejected",
            "log_tag_id": outcome.log_tag_id,
            "error": f"conflict: {outcome}",
            "code": 409,
        }
    status = outcome.status if isinstance(outcome, ContractError) else 422
    return {"status": "rejected", "log_tag_id": None, "error": str(outcome), "code": status}


class Submissions:
    """Admit envelopes through their contract, then append them with a group commit."""

    def __init__(self, *, log: Log, directory: Directory, committer: GroupCommitter) -> None:
        self.log = log
        self.directory = directory
        self.committer = committer

    def contract(self, name: str) -> EnvelopeContract:
        """The envelope contract called `name`."""
        contract = CONTRACTS.get(name)
        if not isinstance(contract, EnvelopeContract):
            raise UnknownContract(f"no contract {name!r} that accepts signed envelopes")
        return contract

    def _admit(
        self, contract: EnvelopeContract, envelopes: Sequence[Any], community: str | None
    ) -> tuple[list[Submission], list[Outcome | ContractError | LedgerError | None]]:
        context = Context(
            directory=self.directory, log=self.log, now=datetime.now(UTC), community=community
        )
        admitted: list[Submission] = []
        slots: list[Outcome | ContractError | LedgerError | None] = []
        for envelope in envelopes:
            try:
                admitted.append(contract.admit(envelope, context))
                slots.append(None)
            except (ContractError, LedgerError) as exc:
                slots.append(exc)
        return admitted, slots

    @staticmethod
    def _merge(
        slots: list[Outcome | ContractError | LedgerError | None], outcomes: list[Outcome]
    ) -> list[dict[str, Any]]:
        it = iter(outcomes)
        return [result(next(it) if slot is None else slot) for slot in slots]

    def submit(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """Blocking: results in order, after the accepted ones are committed."""
        admitted, slots = self._admit(self.contract(contract), envelopes, community)
        return self._merge(slots, self.committer.submit(admitted).result())

    async def submit_async(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """The same, for request handlers: signature checks run in a worker thread."""
        if len(envelopes) <= INLINE_ENVELOPES:
            admitted, slots = self._admit(self.contract(contract), envelopes, community)
        else:  # a big batch would hold the event loop for milliseconds
            admitted, slots = await asyncio.to_thread(
                self._admit, self.contract(contract), envelopes, community
            )
        outcomes = await asyncio.wrap_future(self.committer.submit(admitted))
        return self._merge(slots, outcomes)

    async def run_one(self, contract: EnvelopeContract, request: Any) -> tuple[Submission, Outcome]:
        """One Restroom request through an envelope contract; raises its refusal."""
        context = Context(directory=self.directory, log=self.log, now=datetime.now(UTC))
        submission = contract.admit_request(request, context)
        outcome = (await asyncio.wrap_future(self.committer.submit([submission])))[0]
        return submission, outcome
