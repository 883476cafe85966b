"""Checkpoints, the log key, and consistency proofs: what auditors fetch."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from gateway.deps import MAX_INDEX, AdminDep, GatewayDep
from gateway.problems import Problem
from ledger.errors import NotFoundError
from ledger.log import StoredCheckpoint

router = APIRouter(prefix="/v1", tags=["checkpoints"])


class AnchorView(BaseModel):
    """An anchor of a checkpoint on an EVM chain."""

    chain_id: int
    tx_hash: str
    block_number: int | None
    contract: str | None
    tree_size: int
    root: str
    confirmations: int
    status: str


class CheckpointView(BaseModel):
    """A signed checkpoint."""

    tree_size: int
    root_hash: str
    note: str
    created_at: str
    anchors: list[AnchorView] = []


class CheckpointPage(BaseModel):
    """Checkpoints oldest first; pass the last tree size as `after` for more."""

    checkpoints: list[CheckpointView]


class ConsistencyProof(BaseModel):
    """RFC 9162 consistency proof, hex hashes."""

    first: int
    second: int
    hashes: list[str]


def _view(checkpoint: StoredCheckpoint, anchors: list[Any]) -> dict[str, Any]:
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash.hex(),
        "note": checkpoint.note,
        "created_at": checkpoint.created_at,
        "anchors": [
            {
                "chain_id": a.chain_id,
                "tx_hash": a.tx_hash,
                "block_number": a.block_number,
                "contract": a.contract,
                "tree_size": a.tree_size,
                "root": a.root_hash.hex(),
                "confirmations": a.confirmations,
                "status": a.status,
            }
            for a in anchors
            if a.tree_size == checkpoint.tree_size
        ],
    }


@router.post("/checkpoints", status_code=201, response_model=CheckpointView, summary="Seal now")
async def seal(gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    checkpoint = await gateway.sealer.seal_now()
    return _view(checkpoint, gateway.log.anchors(tree_size=checkpoint.tree_size))


@router.get("/checkpoint", response_class=PlainTextResponse, summary="The latest signed checkpoint")
async def latest(gateway: GatewayDep) -> PlainTextResponse:
    checkpoint = gateway.log.latest_checkpoint()
    if checkpoint is None:
        raise Problem(404, "Not found", "no checkpoint yet")
    return PlainTextResponse(checkpoint.note)


@router.get(
    "/checkpoints", response_model=CheckpointPage, summary="Checkpoint history with anchors"
)
async def history(
    gateway: GatewayDep,
    after: Annotated[int, Query(ge=-1, le=MAX_INDEX)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    found = gateway.log.checkpoints(after=after, limit=limit)
    anchors = gateway.log.anchors() if found else []
    return {"checkpoints": [_view(c, anchors) for c in found]}


@router.get("/log-key", response_class=PlainTextResponse, summary="The log's C2SP verifier key")
async def log_key(gateway: GatewayDep) -> PlainTextResponse:
    assert gateway.log.signer is not None
    return PlainTextResponse(gateway.log.signer.verifier_key + "\n")


@router.get("/registry-key", response_class=PlainTextResponse, summary="The registry's public key")
async def registry_key(gateway: GatewayDep) -> PlainTextResponse:
    return PlainTextResponse(gateway.registry_key.public_key_b64 + "\n")


class InclusionProof(BaseModel):
    """RFC 9162 inclusion proof (audit path), hex hashes."""

    index: int
    tree_size: int
    hashes: list[str]


@router.get("/proofs/inclusion", response_model=InclusionProof, summary="Inclusion proof")
async def inclusion(
    gateway: GatewayDep,
    index: Annotated[int, Query(ge=0, le=MAX_INDEX)],
    tree_size: Annotated[int, Query(ge=1, le=MAX_INDEX)],
) -> dict[str, Any]:
    """The audit path of leaf `index` in the checkpointed tree of `tree_size` (hashes only)."""
    try:
        hashes = gateway.log.inclusion_proof(index, tree_size)
    except NotFoundError as exc:
        raise Problem(404, "Not found", str(exc)) from exc
    return {"index": index, "tree_size": tree_size, "hashes": [h.hex() for h in hashes]}


@router.get("/proofs/consistency", response_model=ConsistencyProof, summary="Consistency proof")
async def consistency(
    gateway: GatewayDep,
    first: Annotated[int, Query(ge=0, le=MAX_INDEX)],
    second: Annotated[int, Query(ge=0, le=MAX_INDEX)],
) -> dict[str, Any]:
    if first > second:
        raise Problem(422, "Invalid request", "first must not exceed second")
    try:
        hashes = gateway.log.consistency_proof(first, second)
    except NotFoundError as exc:
        raise Problem(404, "Not found", str(exc)) from exc
    return {"first": first, "second": second, "hashes": [h.hex() for h in hashes]}
