"""Seed inputs for each fuzz target, made from the offline network's own slips.

Seeds are generated, not committed: the simulated banks' ledgers are fixed
(offline_hub.BANK_NOW, seed 1), so the same slips come out on every run, and the
fuzzer starts from requests that get all the way to an issuer's answer.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from offline_hub import DOWN, REQUESTER_ONLY, SUSPENDED, network

from simulators.issuer import masked_transaction
from simulators.ledger import LedgerTransaction
from txverify import miniqr
from txverify.units import to_timestamp
from txverify.v1 import common_pb2, issuer_pb2, verification_pb2

TARGETS = ("qr", "verify", "issuer", "identity", "answer")
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
    raise ValueError(f"unknown fuzz target {target!r}; one of {', '.join(TARGETS)}")


def write_seeds(target: str, directory: Path) -> int:
    """Write a target's seeds as files named by their hash (as libFuzzer names inputs)."""
    directory.mkdir(parents=True, exist_ok=True)
    found = seeds(target)
    for data in found:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(found)
