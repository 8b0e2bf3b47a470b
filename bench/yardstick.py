"""The yardstick: a bare grpc.aio pass-through with the hub's contract and none of its logic.

    python bench/yardstick.py --bank 002=127.0.0.1:40001 [--bank ...] [--port 0]

It receives Verify, forwards one IssuerInquiry to the bank that issued the slip
and returns the transaction. Nothing else: no identity, membership, rate limit,
expectations, duplicates, audit, metrics or logging. The QR text is decoded
once per distinct text and remembered (a dict lookup afterwards), so what the
yardstick costs is the two gRPC hops themselves: the floor any hub must pay.
The hub is measured against it (bench/harness.py).

Prints `TXVERIFY-READY {"address": "127.0.0.1:PORT"}` once listening; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import grpc  # noqa: E402

from txverify import miniqr  # noqa: E402
from txverify.v1 import (  # noqa: E402
    common_pb2,
    issuer_pb2,
    issuer_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)


class PassThrough(verification_pb2_grpc.VerificationServiceServicer):
    """Verify = one IssuerInquiry to the slip's bank; errors are passed on as they came."""

    def __init__(self, banks: dict[str, str]) -> None:
        self.stubs = {
            code: issuer_pb2_grpc.IssuerServiceStub(grpc.aio.insecure_channel(address))
            for code, address in banks.items()
        }
        self.slips: dict[str, common_pb2.SlipRef] = {}

    async def Verify(
        self, request: verification_pb2.VerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> verification_pb2.VerifyResponse:
        slip = self.slips.get(request.qr_text)
        if slip is None:
            try:
                ref = miniqr.parse(request.qr_text)
            except miniqr.InvalidSlipQR as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            slip = common_pb2.SlipRef(sending_bank=ref.sending_bank, trans_ref=ref.trans_ref)
            self.slips[request.qr_text] = slip
        stub = self.stubs.get(slip.sending_bank)
        if stub is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown issuer")
        try:
            answer = await stub.IssuerInquiry(
                issuer_pb2.IssuerInquiryRequest(slip_ref=slip, request_id=request.request_id),
                timeout=5.0,
            )
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "")
        return verification_pb2.VerifyResponse(
            transaction=answer.transaction, request_id=request.request_id
        )


async def serve(host: str, port: int, banks: dict[str, str]) -> None:
    server = grpc.aio.server()
    verification_pb2_grpc.add_VerificationServiceServicer_to_server(PassThrough(banks), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print("TXVERIFY-READY " + json.dumps({"address": f"{host}:{bound}"}), flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--bank", action="append", default=[], metavar="CODE=HOST:PORT", help="an issuer"
    )
    args = parser.parse_args()
    banks = dict(b.split("=", 1) for b in args.bank)
    if not banks:
        parser.error("give at least one --bank CODE=HOST:PORT")
    asyncio.run(serve(args.host, args.port, banks))


if __name__ == "__main__":
    main()
