"""Fuzz target: IssuerInquiryRequest bytes through a simulated bank's IssuerServicer.

The request goes to the bank it names (014 when it names none of the simulated
ones) three times: in dev mode; under mTLS from the hub, which must be answered
the same way; and under mTLS from another caller, which must be refused. Answers
are NOT_FOUND, INVALID_ARGUMENT or PERMISSION_DENIED, or the transaction asked
about, masked: no account number or proxy value of the ledger leaves the bank whole.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from offline_hub import Outcome, network
from txverify.simulators.ledger import PartyRecord
from txverify.v1 import issuer_pb2

ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
# Shorter values are masked whole or could be anyone's (masking.py shows 4 digits).
_MIN_SECRET = 6


def _secrets(party: PartyRecord) -> list[str]:
    return [v for v in (party.account, party.proxy_value) if len(v) >= _MIN_SECRET]


def check_answer(request: issuer_pb2.IssuerInquiryRequest, bank: str, outcome: Outcome) -> None:
    assert outcome.code in ALLOWED, f"{outcome.code.name}: {outcome.details}"
    if outcome.code is not grpc.StatusCode.OK:
        return
    response: issuer_pb2.IssuerInquiryResponse = outcome.response
    tx = response.transaction
    assert (bank, request.slip_ref.trans_ref) == (tx.sending_bank, tx.trans_ref)
    stored = network().banks[bank].ledger.get_transaction(tx.trans_ref)
    assert stored is not None
    sent = response.SerializeToString()
    for secret in _secrets(stored.sender) + _secrets(stored.receiver):
        assert secret.encode() not in sent, "an unmasked account or proxy left the bank"


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    try:
        request = issuer_pb2.IssuerInquiryRequest.FromString(data)
    except DecodeError:
        return  # gRPC refuses such bytes before the servicer sees them
    offline = network()
    bank = request.slip_ref.sending_bank
    if bank not in offline.banks:
        bank = "014"
    plain = offline.inquire(request, bank=bank)
    check_answer(request, bank, plain)
    from_hub = offline.inquire(request, bank=bank, guarded=True, common_names=[b"hub"])
    check_answer(request, bank, from_hub)
    assert (plain.code, plain.details) == (from_hub.code, from_hub.details)
    intruder = request.requester.encode() if request.requester != "hub" else b"014"
    refused = offline.inquire(request, bank=bank, guarded=True, common_names=[intruder])
    assert grpc.StatusCode.PERMISSION_DENIED is refused.code, refused
