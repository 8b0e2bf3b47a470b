"""Slip decoding: a VerifyRequest's QR text or SlipRef -> a validated SlipRef.

(A slip image is read to its QR text first, off the loop: txverify.hub.images.)"""

from __future__ import annotations

import re

from txverify import miniqr
from txverify.banks import is_member_code
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.v1 import common_pb2, verification_pb2

_TRANS_REF = re.compile(r"[A-Za-z0-9]{1,32}")  # fullmatch: "$" would let "\n" through


def slip_of(request: verification_pb2.VerifyRequest) -> common_pb2.SlipRef:
    """The slip a request names, or ServiceError INVALID_SLIP_QR / INVALID_REQUEST."""
    which = request.WhichOneof("slip")
    if which == "qr_text":
        return slip_of_qr(request.qr_text)
    if which == "slip_ref":
        slip = request.slip_ref
        problems = []
        if not is_member_code(slip.sending_bank):
            problems.append(
                FieldViolation("slip_ref.sending_bank", "must be a 3-digit bank code, e.g. 014")
            )
        if not _TRANS_REF.fullmatch(slip.trans_ref):
            problems.append(
                FieldViolation("slip_ref.trans_ref", "must be 1-32 ASCII letters and digits")
            )
        if problems:
            raise ServiceError(
                Reason.INVALID_REQUEST,
                "invalid slip_ref: " + "; ".join(f"{p.field} {p.description}" for p in problems),
                metadata={"field": problems[0].field},
                violations=tuple(problems),
            )
        return common_pb2.SlipRef(sending_bank=slip.sending_bank, trans_ref=slip.trans_ref)
    raise ServiceError(
        Reason.INVALID_REQUEST,
        "a slip is required: set qr_text, slip_ref or slip_image",
        metadata={"field": "slip"},
        violations=(FieldViolation("slip", "set qr_text, slip_ref or slip_image"),),
    )


def slip_of_qr(qr_text: str, field: str = "qr_text") -> common_pb2.SlipRef:
    """The slip a mini QR names, or ServiceError INVALID_SLIP_QR naming the bad tag."""
    try:
        ref = miniqr.parse(qr_text)
    except miniqr.InvalidSlipQR as exc:
        raise ServiceError(
            Reason.INVALID_SLIP_QR,
            f"invalid slip QR: {exc}",
            metadata={"field": exc.field, "qr_reason": exc.reason.value},
            violations=(FieldViolation(f"{field}[{exc.field}]", str(exc)),),
        ) from None
    return common_pb2.SlipRef(sending_bank=ref.sending_bank, trans_ref=ref.trans_ref)
