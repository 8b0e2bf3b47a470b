"""Slip images in VerifyRequest: read by the hub, each failure its own reason, off the loop."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
from typing import Any

import grpc
import httpx
import pytest
import segno
from PIL import Image

from conftest import HubFactory, member_channel
from txverify import miniqr
from txverify.errors import Reason, ServiceError, details_of
from txverify.hub.app import RunningHub
from txverify.hub.images import ImageDecoder, slip_qr_of
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator
from txverify.slipimage import render_slip_png
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc
from txverify.wire import MAX_SLIP_IMAGE_BYTES

PAYMENT_BODY = "00020101021129370016A000000677010111011300668123456785802TH53037646304"
PAYMENT_QR = PAYMENT_BODY + f"{miniqr.crc16_ccitt_false(PAYMENT_BODY.encode()):04X}"


def _slip(sim: RunningSimulator, code: str = "014", skip: int = 0) -> Any:
    bank = sim.nodes[code].bank
    visible = [
        s
        for s in bank.list_slips(100, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    ]
    return visible[skip]


def _png(slip: Any) -> bytes:
    tx = common_pb2.Transaction(trans_ref=slip.transaction.trans_ref)
    return render_slip_png(tx, slip.qr_text)


def _qr_png(*texts: str) -> bytes:
    """QR codes side by side on one white image."""
    codes = []
    for text in texts:
        out = io.BytesIO()
        segno.make(text, error="m").save(out, kind="png", scale=5, border=4)
        codes.append(Image.open(io.BytesIO(out.getvalue())).convert("L"))
    image = Image.new("L", (sum(c.width for c in codes), max(c.height for c in codes)), 255)
    x = 0
    for code in codes:
        image.paste(code, (x, 0))
        x += code.width
    return _encode(image, "PNG")


def _encode(image: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def _converted(png: bytes, kind: str) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return _encode(image.convert("RGB"), kind)


async def _verify(hub: RunningHub, image: bytes) -> verification_pb2.VerifyResponse:
    async with member_channel(hub.port) as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        return await stub.Verify(verification_pb2.VerifyRequest(slip_image=image), timeout=10)


async def _refusal(hub: RunningHub, image: bytes) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _verify(hub, image)
    details = details_of(caught.value)
    return details.status, details.reason, details.code


# --- choosing the slip among an image's QR codes --------------------------------------


def test_the_one_slip_qr_is_chosen_among_other_codes() -> None:
    slip = miniqr.build("014", "ABC123")

    assert slip == slip_qr_of([PAYMENT_QR, slip, "hello", slip])


@pytest.mark.parametrize(
    ("texts", "reason"),
    [
        ([], Reason.SLIP_IMAGE_NO_QR),
        ([PAYMENT_QR, "hello"], Reason.SLIP_IMAGE_NOT_A_SLIP),
        (
            [miniqr.build("014", "ABC123"), miniqr.build("002", "XYZ789")],
            Reason.SLIP_IMAGE_SEVERAL_SLIPS,
        ),
    ],
)
def test_an_image_without_exactly_one_slip_says_why(texts: list[str], reason: Reason) -> None:
    with pytest.raises(ServiceError) as caught:
        slip_qr_of(texts)

    assert (reason, "6400", "slip_image") == (
        caught.value.reason,
        caught.value.code,
        caught.value.metadata["field"],
    )


# --- through the hub -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
async def test_a_slip_image_is_verified_by_the_hub(
    hub: RunningHub, simulator: RunningSimulator, kind: str
) -> None:
    slip = _slip(simulator)
    image = _png(slip) if kind == "PNG" else _converted(_png(slip), kind)

    answer = await _verify(hub, image)

    assert (slip.transaction.trans_ref, verification_pb2.VERDICT_VALID) == (
        answer.transaction.trans_ref,
        answer.verdict,
    )


def _huge_blank() -> bytes:
    return _encode(Image.new("1", (6000, 5000), 1), "PNG")  # 30 M pixels in a few KB


def _random_noise() -> bytes:
    return _encode(Image.frombytes("L", (1200, 1000), os.urandom(1200 * 1000)), "PNG")


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (lambda: b"\x89PNG\r\n\x1a\n not really", Reason.SLIP_IMAGE_UNREADABLE),
        (lambda: b"%PDF-1.7 a slip as a PDF", Reason.SLIP_IMAGE_UNREADABLE),
        (lambda: _encode(Image.new("RGB", (50, 50), "white"), "GIF"), Reason.SLIP_IMAGE_UNREADABLE),
        (lambda: _encode(Image.new("RGB", (50, 50), "white"), "BMP"), Reason.SLIP_IMAGE_UNREADABLE),
        (_huge_blank, Reason.SLIP_IMAGE_TOO_LARGE),
        (_random_noise, Reason.SLIP_IMAGE_NO_QR),
        (lambda: _encode(Image.new("L", (300, 300), 255), "JPEG"), Reason.SLIP_IMAGE_NO_QR),
        (lambda: _qr_png(PAYMENT_QR), Reason.SLIP_IMAGE_NOT_A_SLIP),
        (
            lambda: _qr_png(miniqr.build("014", "ABC123"), miniqr.build("014", "ABC124")),
            Reason.SLIP_IMAGE_SEVERAL_SLIPS,
        ),
    ],
    ids=[
        "truncated-png",
        "pdf",
        "gif",
        "bmp",
        "30M-pixels",
        "noise",
        "blank",
        "payment-qr",
        "two-slips",
    ],
)
async def test_each_image_failure_has_its_reason_and_code(
    hub: RunningHub, image: Any, reason: Reason
) -> None:
    assert (grpc.StatusCode.INVALID_ARGUMENT, reason.value, "6400") == await _refusal(hub, image())


async def test_an_image_over_the_limit_is_refused_unread(hub: RunningHub) -> None:
    assert (
        grpc.StatusCode.INVALID_ARGUMENT,
        "SLIP_IMAGE_TOO_LARGE",
        "6400",
    ) == await _refusal(hub, b"\x89PNG" + bytes(MAX_SLIP_IMAGE_BYTES))


async def test_the_same_slip_twice_in_one_image_is_one_slip(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    slip = _slip(simulator)

    answer = await _verify(hub, _qr_png(slip.qr_text, PAYMENT_QR, slip.qr_text))

    assert slip.transaction.trans_ref == answer.transaction.trans_ref


async def test_a_slip_image_comes_as_base64_over_the_json_api(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(json_port=0)
    assert hub.json_api is not None
    slip = _slip(simulator)
    headers = {"content-type": "application/json", "x-member-id": "002"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.json_api.port}") as client:
        body = {"slipImage": base64.b64encode(_png(slip)).decode()}
        answer = await client.post(
            "/txverify.v1.VerificationService/Verify", json=body, headers=headers
        )
        bad = await client.post(
            "/txverify.v1.VerificationService/Verify",
            json={"slipImage": base64.b64encode(b"not an image").decode()},
            headers=headers,
        )

    assert slip.transaction.trans_ref == answer.json()["transaction"]["transRef"]
    assert (400, "SLIP_IMAGE_UNREADABLE") == (
        bad.status_code,
        bad.json()["details"][0]["debug"]["reason"],
    )


async def test_an_unknown_member_gets_no_image_read(
    hub: RunningHub, simulator: RunningSimulator
) -> None:
    async with member_channel(hub.port, "999") as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Verify(verification_pb2.VerifyRequest(slip_image=_png(_slip(simulator))))

    assert "UNKNOWN_MEMBER" == details_of(caught.value).reason
    assert hub.images is not None
    assert [] == hub.images.pids  # no decoder was ever started


# --- the decoders ---------------------------------------------------------------------


async def test_the_decoders_run_at_the_lowest_priority() -> None:
    decoder = ImageDecoder(workers=1)
    try:
        with pytest.raises(ServiceError):
            await decoder.slip_qr(_encode(Image.new("L", (64, 64), 255), "PNG"))
        (pid,) = decoder.pids

        assert os.SCHED_IDLE == os.sched_getscheduler(pid)
        assert 19 == os.getpriority(os.PRIO_PROCESS, pid)
    finally:
        await decoder.close()
    assert [] == decoder.pids


async def test_a_decoder_that_dies_is_replaced_and_the_image_refused(
    simulator: RunningSimulator,
) -> None:
    decoder = ImageDecoder(workers=1)
    png = _png(_slip(simulator))
    try:
        await decoder.slip_qr(png)
        (pid,) = decoder.pids
        os.kill(pid, signal.SIGKILL)  # as a crash in the image library would
        await asyncio.sleep(0.2)
        with pytest.raises(ServiceError) as caught:
            await decoder.slip_qr(png)

        assert Reason.SLIP_IMAGE_UNREADABLE is caught.value.reason
        assert _slip(simulator).qr_text == await decoder.slip_qr(png)  # a new decoder
        assert pid not in decoder.pids
    finally:
        await decoder.close()


async def test_a_caller_that_goes_away_leaves_the_decoder_in_step(
    simulator: RunningSimulator,
) -> None:
    decoder = ImageDecoder(workers=1)
    png = _png(_slip(simulator))
    try:
        going = asyncio.ensure_future(decoder.slip_qr(_random_noise()))
        await asyncio.sleep(0.05)
        going.cancel()
        # The next image gets its own answer, not the abandoned one's.
        assert _slip(simulator).qr_text == await decoder.slip_qr(png)
    finally:
        await decoder.close()


async def test_images_past_the_queue_are_busy_with_a_retry_delay() -> None:
    decoder = ImageDecoder(workers=1, max_waiting=2)
    noise = _random_noise()
    try:
        results = await asyncio.gather(
            *(decoder.slip_qr(noise) for _ in range(6)), return_exceptions=True
        )
    finally:
        await decoder.close()

    reasons = [r.reason for r in results if isinstance(r, ServiceError)]
    assert [Reason.SLIP_IMAGE_NO_QR] * 3 + [Reason.SLIP_IMAGE_BUSY] * 3 == reasons
    busy = [
        r for r in results if isinstance(r, ServiceError) and r.reason is Reason.SLIP_IMAGE_BUSY
    ]
    assert all(r.retry_after == 1.0 for r in busy)
    assert all(r.status_code is grpc.StatusCode.RESOURCE_EXHAUSTED for r in busy)
