"""Seed inputs for each fuzz target, made from the offline network's own slips.

Seeds are generated, not committed: the simulated banks' ledgers are fixed
(offline_hub.BANK_NOW, seed 1), so the same slips come out on every run, and the
fuzzer starts from requests that get all the way to an issuer's answer.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from offline_hub import DOWN, REQUESTER_ONLY, SUSPENDED, network
from txverify import miniqr
from txverify.simulators.issuer import masked_transaction
from txverify.simulators.ledger import LedgerTransaction
from txverify.units import to_timestamp
from txverify.v1 import audit_pb2, common_pb2, issuer_pb2, registry_pb2, verification_pb2

TARGETS = ("qr", "verify", "issuer", "identity", "answer", "registry", "audit")
_V = verification_pb2
_TLS = 64  # verify_target control bits
_ODD = 128


def _with_crc(body: str) -> str:
    return body + f"{miniqr.crc16_ccitt_false(body.encode('ascii')):04X}"


# A PromptPay payment QR (EMVCo, tag 63 CRC): not a slip, with its own reason.
PAYMENT_QR = _with_crc(
    "00020101021129370016A000000677010111011300668123456785802TH530376454041.006304"
)


def _short_crc_slip() -> str:
    """A bank slip whose CRC starts with 0, written with the zero dropped (seen in the wild)."""
    for i in range(1000):
        text = miniqr.build("014", f"ZERO{i:016d}")
        if text[-4] == "0":
            return text[:-4] + text[-3:]
    raise AssertionError("no CRC with a leading zero in 1000 tries")


def qr_texts() -> list[str]:
    slips = [slip.qr_text for slip in network().slips()]
    one = slips[0]
    return [
        *slips,
        one[:-4] + one[-4:].lower(),
        _short_crc_slip(),
        one + "\n",
        one[:-1],
        PAYMENT_QR,
        "",
        "   ",
        "9" * 600,
        "0046000600000101030140225สลิป5102TH9104FFFF",
    ]


def _matching(tx: LedgerTransaction) -> _V.Expectations:
    """Expectations the transaction meets, every kind of them."""
    receiver = tx.receiver
    wanted = _V.ReceiverExpectation()
    if receiver.account:
        wanted.account = receiver.account
    elif receiver.proxy_kind is not None:
        wanted.proxy.type = common_pb2.ProxyType.Value(f"PROXY_TYPE_{receiver.proxy_kind.value}")
        wanted.proxy.value = receiver.proxy_value
    return _V.Expectations(
        amount=_V.AmountExpectation(equals_satang=tx.amount, at_least_satang=tx.amount),
        receivers=[wanted] if wanted.WhichOneof("receiver") else [],
        receiving_bank=tx.receiving_bank,
        not_before=to_timestamp(tx.trans_time - timedelta(hours=1)),
        not_after=to_timestamp(tx.trans_time + timedelta(hours=1)),
    )


def verify_requests() -> list[bytes]:
    slips = network().slips()[::3]
    out: list[bytes] = []
    for i, slip in enumerate(slips):
        tx = slip.transaction
        ref = common_pb2.SlipRef(sending_bank=tx.sending_bank, trans_ref=tx.trans_ref)
        flags = (i % 3) | ((i % 8) << 3)  # members 014, 004, 900; every deadline
        requests = [
            _V.VerifyRequest(qr_text=slip.qr_text),
            _V.VerifyRequest(slip_ref=ref, request_id=f"req-{i}", expect=_matching(tx)),
            _V.VerifyRequest(
                qr_text=slip.qr_text, requester_reference=f"order-{i}", expect=_matching(tx)
            ),
        ]
        out += [bytes([flags]) + r.SerializeToString() for r in requests]
    first = slips[0].transaction
    for member in (REQUESTER_ONLY, SUSPENDED, DOWN):
        ref = common_pb2.SlipRef(sending_bank=member, trans_ref=first.trans_ref)
        out.append(b"\x00" + _V.VerifyRequest(slip_ref=ref).SerializeToString())
    qr = _V.VerifyRequest(qr_text=slips[0].qr_text).SerializeToString()
    out += [bytes([flags]) + qr for flags in (3, 4, 5, 6, 7, _TLS, _TLS | _ODD, _ODD)]
    out += [b"\x00", b"\x00" + _V.VerifyRequest(qr_text=PAYMENT_QR).SerializeToString()]
    return out


def inquiries() -> list[bytes]:
    out: list[bytes] = []
    for i, slip in enumerate(network().slips()[::2]):
        tx = slip.transaction
        ref = common_pb2.SlipRef(sending_bank=tx.sending_bank, trans_ref=tx.trans_ref)
        request = issuer_pb2.IssuerInquiryRequest(
            slip_ref=ref, requester="004", request_id=f"req-{i}"
        )
        out.append(request.SerializeToString())
    wrong = issuer_pb2.IssuerInquiryRequest(slip_ref=common_pb2.SlipRef(sending_bank="002"))
    return [*out, wrong.SerializeToString(), b""]


def identities() -> list[bytes]:
    return [
        b"\x00\nipv4:127.0.0.1:5000\n\nx-member-id:014",
        b"\x00\nipv6:%5B::1%5D:5000\n\nx-member-id:004\nuser-agent:grpc-python",
        b"\x00\nipv4:10.0.0.8:5000\n\nx-member-id:014",
        b"\x00\nunix:/tmp/sock\n\nx-member-id:014",
        b"\x00\nipv4:127.0.0.1:5000\n\nx-member-id:999",
        b"\x00\nipv4:127.0.0.1:5000\n\nx-member-id:" + REQUESTER_ONLY.encode(),
        b"\x00\nipv4:127.0.0.1:5000\n\nx-member-id:" + SUSPENDED.encode(),
        b"\x00\nipv4:127.0.0.1:5000\n\nx-member-id-bin:\x00\x01",
        b"\x01\nipv4:192.0.2.7:443\n014\nx-member-id:014",
        b"\x01\nipv4:192.0.2.7:443\n014\nx-member-id:004",
        b"\x01\nipv4:192.0.2.7:443\n014,004",
        b"\x01\nipv4:192.0.2.7:443\n\xff\xfe",
        b"\x01\nipv4:192.0.2.7:443\n",
    ]


def answers() -> list[bytes]:
    out: list[bytes] = []
    for i, slip in enumerate(network().slips()[::4]):
        answer = issuer_pb2.IssuerInquiryResponse(transaction=masked_transaction(slip.transaction))
        out.append(bytes([i]) + answer.SerializeToString())
    return [*out, b"\x00"]


def registry_calls() -> list[bytes]:
    """Every MemberRegistry RPC as the operator, a member's try, and a new member's life."""
    from registry_target import control, record  # imports offline_hub, as this module does

    r = registry_pb2

    def op(rpc: str, request: Any, caller: str = "operator") -> bytes:
        return record(control(rpc, caller), request)

    new = r.Member(
        code="101",
        name="New Bank",
        kind=common_pb2.MEMBER_KIND_BANK,
        issuer_endpoint="127.0.0.1:50101",
        cert_identity="new-bank",
        rate_limit_rps=0.001,
        rate_limit_burst=3,
    )
    mask = field_mask_pb2.FieldMask(paths=["name", "rate_limit_rps", "rate_limit_burst"])
    life = [
        op("RegisterMember", r.RegisterMemberRequest(member=new, roles=[r.ROLE_REQUESTER])),
        op("Subscribe", r.SubscribeRequest(code="101", role=r.ROLE_ISSUER)),
        op(
            "UpdateMember",
            r.UpdateMemberRequest(
                code="101",
                member=r.Member(name="Renamed", rate_limit_rps=1e6, rate_limit_burst=1_000_000),
                update_mask=mask,
            ),
        ),
        op(
            "SetMemberStatus",
            r.SetMemberStatusRequest(code="101", status=r.MEMBER_STATUS_TERMINATED, reason="left"),
        ),
    ]
    return [
        *life,
        b"".join(life),
        op("RegisterMember", r.RegisterMemberRequest(member=r.Member(code="102"))),
        op("RegisterMember", r.RegisterMemberRequest(member=new), "operator-tls"),
        op("GetMember", r.GetMemberRequest(code="014", include_history=True)),
        op("GetMember", r.GetMemberRequest(code="777")),
        op("ListMembers", r.ListMembersRequest()),
        op("UpdateMember", r.UpdateMemberRequest(code="014", member=r.Member(name="x"))),
        op(
            "SetMemberStatus",
            r.SetMemberStatusRequest(code=SUSPENDED, status=r.MEMBER_STATUS_ACTIVE),
        ),
        op(
            "SetMemberStatus",
            r.SetMemberStatusRequest(code="014", status=r.MEMBER_STATUS_SUSPENDED, reason="audit"),
        ),
        op("Unsubscribe", r.UnsubscribeRequest(code="014", role=r.ROLE_ISSUER)),
        op(
            "Subscribe", r.SubscribeRequest(code=REQUESTER_ONLY, service="x", role=r.ROLE_REQUESTER)
        ),
        op("ListMembers", r.ListMembersRequest(), "014"),
        op("GetMember", r.GetMemberRequest(code="014"), "nobody"),
        op("GetMember", r.GetMemberRequest(code="014"), "remote"),
        b"",
    ]


def audit_queries() -> list[bytes]:
    """Queries that find records (the verify seeds'), and ones that must be refused."""
    slip = network().slips()[0].transaction
    # The audit's times are the real clock's: a window around any day this runs, fixed
    # (seeds must be the same bytes on every call).
    since = to_timestamp(datetime(2020, 1, 1, tzinfo=UTC))
    until = to_timestamp(datetime(2100, 1, 1, tzinfo=UTC))
    queries = [
        audit_pb2.QueryAuditRequest(),
        audit_pb2.QueryAuditRequest(member="014", limit=5),
        audit_pb2.QueryAuditRequest(trans_ref=slip.trans_ref),
        audit_pb2.QueryAuditRequest(request_id="req-0"),
        audit_pb2.QueryAuditRequest(since=since, until=until),
        audit_pb2.QueryAuditRequest(since=until),
        audit_pb2.QueryAuditRequest(until=Timestamp(seconds=253_402_300_799, nanos=999_999_999)),
        audit_pb2.QueryAuditRequest(since=Timestamp(seconds=-62_135_596_801)),
        audit_pb2.QueryAuditRequest(since=Timestamp(nanos=-1), limit=-1),
        audit_pb2.QueryAuditRequest(member="900", limit=10_000),
    ]
    return [bytes([who]) + q.SerializeToString() for q in queries for who in range(8)]


def seeds(target: str) -> list[bytes]:
    """The seed inputs of one target."""
    if target == "qr":
        return [text.encode() for text in qr_texts()]
    if target == "verify":
        return verify_requests()
    if target == "issuer":
        return inquiries()
    if target == "identity":
        return identities()
    if target == "answer":
        return answers()
    if target == "registry":
        return registry_calls()
    if target == "audit":
        return audit_queries()
    raise ValueError(f"unknown fuzz target {target!r}; one of {', '.join(TARGETS)}")


def write_seeds(target: str, directory: Path) -> int:
    """Write a target's seeds as files named by their hash (as libFuzzer names inputs)."""
    directory.mkdir(parents=True, exist_ok=True)
    found = seeds(target)
    for data in found:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(found)
