"""Slip images: a rendered slip carries a mini QR that reads back; bad files fail clearly."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import segno
from PIL import Image, ImageFont

from txverify import miniqr, slipimage, units
from txverify.slipimage import SlipImageError, decode_qr_texts, render_slip_png
from txverify.v1 import common_pb2

TRANS_REF = "20261127014uwbyEkMtC7RSvW"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def qr_text() -> str:
    return miniqr.build("014", TRANS_REF)


def masked_transaction(
    status: common_pb2.TransactionStatus.ValueType = common_pb2.TRANSACTION_STATUS_COMPLETED,
) -> common_pb2.Transaction:
    """A transfer as an issuer reports it: personal data already masked."""
    return common_pb2.Transaction(
        trans_ref=TRANS_REF,
        sending_bank="014",
        receiving_bank="004",
        trans_time=units.to_timestamp(datetime(2026, 11, 27, 7, 5, 12, tzinfo=UTC)),
        sender=common_pb2.Party(
            display_name="ชิซูกะ ส",
            name="CHICHUKA S",
            account=common_pb2.Account(type=common_pb2.ACCOUNT_TYPE_BANKAC, value="xxx-x-x2295-x"),
        ),
        receiver=common_pb2.Party(
            display_name="โนบิตะ น",
            name="NOBITA N",
            proxy=common_pb2.Proxy(type=common_pb2.PROXY_TYPE_MSISDN, value="xxx-xxx-5678"),
        ),
        amount=units.money(150000),
        paid_local_amount=units.money(150000),
        trans_fee_amount=units.money(0),
        country_code="TH",
        status=status,
    )


@pytest.fixture(scope="module")
def slip_png(qr_text: str) -> bytes:
    return render_slip_png(masked_transaction(), qr_text)


def test_rendered_slip_decodes_to_its_qr_text(
    slip_png: bytes, qr_text: str, tmp_path: Path
) -> None:
    path = tmp_path / "slip.png"
    path.write_bytes(slip_png)

    assert [qr_text] == decode_qr_texts(path)


def test_rendered_slip_is_a_png_at_least_400_px_wide(slip_png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "slip.png"
    path.write_bytes(slip_png)

    assert PNG_SIGNATURE == path.read_bytes()[:8]
    with Image.open(path) as image:
        assert "PNG" == image.format
        assert image.width >= 400


def test_reversed_transaction_renders_and_decodes(qr_text: str) -> None:
    png = render_slip_png(
        masked_transaction(common_pb2.TRANSACTION_STATUS_REVERSED), qr_text, bank_name="SCB EASY"
    )

    assert [qr_text] == decode_qr_texts(png)


def test_image_without_qr_decodes_to_nothing(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("RGB", (600, 400), "white").save(path)

    assert [] == decode_qr_texts(path)


def test_non_image_file_raises_slip_image_error(tmp_path: Path) -> None:
    path = tmp_path / "slip.png"
    path.write_text("not a picture\n", encoding="utf-8")

    with pytest.raises(SlipImageError, match="not an image"):
        decode_qr_texts(path)


def test_missing_file_raises_slip_image_error(tmp_path: Path) -> None:
    with pytest.raises(SlipImageError, match="no such file"):
        decode_qr_texts(tmp_path / "missing.png")


def test_decoding_from_bytes_equals_decoding_from_path(slip_png: bytes, tmp_path: Path) -> None:
    path = tmp_path / "slip.png"
    path.write_bytes(slip_png)

    assert decode_qr_texts(path) == decode_qr_texts(slip_png)


def test_several_qr_codes_read_top_to_bottom_then_left_to_right() -> None:
    def qr(text: str) -> Image.Image:
        out = io.BytesIO()
        segno.make_qr(text, error="m").save(out, kind="png", scale=4, border=4)
        out.seek(0)
        with Image.open(out) as png:
            return png.convert("L")

    sheet = Image.new("L", (400, 400), 255)
    # Top row slightly staggered: the right code sits a little higher.
    sheet.paste(qr("top right"), (220, 10))
    sheet.paste(qr("top left"), (10, 30))
    sheet.paste(qr("bottom"), (10, 220))
    out = io.BytesIO()
    sheet.save(out, format="PNG")

    assert ["top left", "top right", "bottom"] == decode_qr_texts(out.getvalue())


def test_transparent_background_reads_as_white(slip_png: bytes, qr_text: str) -> None:
    # Ink as opacity over black pixels, as apps export stickers: dropping the
    # alpha channel would leave a black image.
    with Image.open(io.BytesIO(slip_png)) as slip:
        ink = Image.eval(slip.convert("L"), lambda v: 255 - v)
    transparent = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    transparent.putalpha(ink)
    out = io.BytesIO()
    transparent.save(out, format="PNG")

    assert [qr_text] == decode_qr_texts(out.getvalue())


def test_missing_glyphs_are_detected_although_drawn_as_boxes() -> None:
    # Pillow's own font has no Thai: it would draw boxes, which are not empty.
    font = ImageFont.load_default(size=20)

    assert font.getbbox("ช")[2] > 0
    assert slipimage._has_glyphs(font, "CHICHUKA S")
    assert not slipimage._has_glyphs(font, "ชิซูกะ ส")
