"""POST /api/<contract>: run a contract with the Restroom request shape, as Restroom does."""

# No `from __future__ import annotations`: FastAPI must see each route's body model itself.
import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from contracts.base import Context, Contract, EnvelopeContract, ReadContract
from contracts.registry import CONTRACTS
from gateway.deps import CallerDep
from gateway.problems import Problem

router = APIRouter(prefix="/api", tags=["contracts"])


def _route(contract: Contract) -> None:
    model = contract.request_model

    async def run(request: Request, body: model, caller: CallerDep) -> Any:  # type: ignore[valid-type]
        gateway = request.app.state.gateway
        raw = await request.json()  # the exact bytes' values: signatures are over them
        if isinstance(contract, EnvelopeContract):
            return await gateway.submissions.run_one(contract, raw)
        assert isinstance(contract, ReadContract)
        if not caller.admin and caller.app_id is None:
            raise Problem(
                401,
                "Unauthorized",
                "reading the log needs an app key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        context = Context(
            directory=gateway.directory,
            log=gateway.log,
            now=datetime.now(UTC),
            readable=caller.readable,
        )
        return await asyncio.to_thread(contract.run, raw, context)

    router.add_api_route(
        f"/{contract.name}",
        run,
        methods=["POST"],
        name=contract.tag,
        summary=f"{contract.tag}: {contract.summary}",
        response_model=contract.response_model,
    )


for _contract in CONTRACTS.values():
    _route(_contract)
