"""Fuzz target: slip mini QR text, through miniqr.parse and the hub's slip decoding.

Bytes become text three ways, so every kind of string gets tried: UTF-8 with
undecodable bytes kept as lone surrogates (surrogateescape), Latin-1 (one
character a byte: the printable-ASCII edge and control characters), and UTF-16
(any code point, astral ones and unpaired surrogates too). A text that is not a
slip must fail with InvalidSlipQR (from the hub: ServiceError INVALID_SLIP_QR),
and one that is must decode to what build() writes back.
"""

from __future__ import annotations

from dataclasses import replace

from txverify import miniqr
from txverify.errors import Reason, ServiceError
from txverify.hub.slip import slip_of
from txverify.v1 import verification_pb2

# A refusal quotes at most 40 characters of the input (miniqr._ECHO_LIMIT): a hostile
# or huge text must not flood the logs it is written to.
MAX_MESSAGE = 300
_PROVIDER_OF_MEMBER = {member: provider for provider, member in miniqr.EWALLET_PROVIDERS.items()}


def texts(data: bytes) -> list[str]:
    """The texts one input stands for."""
    return [
        data.decode("utf-8", "surrogateescape"),
        data.decode("latin-1"),
        data[: len(data) // 2 * 2].decode("utf-16-le", "surrogatepass"),
    ]


def check_text(text: str) -> None:
    try:
        ref = miniqr.parse(text)
    except miniqr.InvalidSlipQR as exc:
        _check_refusal(exc)
        ref = None
    if ref is not None:
        _check_round_trip(ref)
    if _encodable(text):  # a protobuf string holds UTF-8 only: no lone surrogates
        _check_hub(text, ref)


def _check_refusal(exc: miniqr.InvalidSlipQR) -> None:
    assert isinstance(exc.reason, miniqr.SlipReason)
    assert len(str(exc)) <= MAX_MESSAGE, f"{exc.reason}: message of {len(str(exc))} chars"


def _check_round_trip(ref: miniqr.SlipRef) -> None:
    """A slip that parses is one build() writes, and that text parses back to it."""
    if ref.layout is miniqr.SlipLayout.BANK:
        again = miniqr.parse(miniqr.build(ref.sending_bank, ref.trans_ref, ref.country_code))
        assert ref == again, f"{ref} != {again}"
        return
    assert ref.trans_date is not None
    again = miniqr.parse(
        miniqr.build_ewallet(
            ref.trans_ref, ref.trans_date, ref.event_type, _PROVIDER_OF_MEMBER[ref.sending_bank]
        )
    )
    # build_ewallet writes no tag 51, which an e-wallet slip may still carry.
    assert replace(ref, country_code=again.country_code) == again, f"{ref} != {again}"


def _check_hub(text: str, ref: miniqr.SlipRef | None) -> None:
    """The hub's slip decoding agrees with the parser and fails only as documented."""
    try:
        slip = slip_of(verification_pb2.VerifyRequest(qr_text=text))
    except ServiceError as error:
        refused: ServiceError | None = error
    else:
        refused = None
    if refused is not None:
        assert ref is None, f"hub refused a slip the parser accepts: {refused}"
        assert Reason.INVALID_SLIP_QR is refused.reason
        refused.to_status().SerializeToString()  # what abort() sends must encode
        return
    assert ref is not None
    assert (ref.sending_bank, ref.trans_ref) == (slip.sending_bank, slip.trans_ref)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def TestOneInput(data: bytes) -> None:
    """One fuzz input (the name atheris looks for)."""
    for text in texts(data):
        check_text(text)
