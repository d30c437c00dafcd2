from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.auth import signin
from app.context import ctx
from app.trust.record import miner_record
from app.trust.schemas import MinerRecordOut
from app.web import Router, json_response

router = Router("trust")


@router.get("/miners/{address}", responses={200: MinerRecordOut}, errors=(400, 404))
async def get_miner(request: Request) -> Response:
    """Public: a wallet's record: jobs done, checks passed and failed (by kind and in the last
    24 h), its score, whether it is on probation or suspended, and why."""
    address = signin.checksum(request.path_params["address"])
    record = await miner_record(ctx(request), address)
    return json_response(MinerRecordOut(**record), headers={"Cache-Control": "public, max-age=5"})
