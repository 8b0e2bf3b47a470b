"""Slip images: render a transfer slip as PNG with its mini QR, read QR texts back from images."""

from __future__ import annotations

import functools
import io
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple, TypeAlias

import segno
import zxingcpp
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from txverify import units
from txverify.banks import BANKS, bank_label
from txverify.v1 import common_pb2

__all__ = ["ImageTooLarge", "SlipImageError", "decode_qr_texts", "render_slip_png"]

_Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont


class SlipImageError(ValueError):
    """An image could not be read: the file is missing or is not an image."""


class ImageTooLarge(SlipImageError):
    """An image has more pixels than the reader was allowed to decode."""


# Layout of the slip, in pixels.
_WIDTH = 600
_MARGIN = 32
_HEADER_HEIGHT = 80
_TEXT_WIDTH = _WIDTH - 2 * _MARGIN
# The slip is drawn on a canvas this tall and cropped to what was drawn; every
# field has a bounded number of lines, so a slip never comes near it.
_CANVAS_HEIGHT = 1600

# The QR: quiet zone of 4 modules (ISO/IEC 18004), 4 px per module at least.
_QR_BORDER = 4
_QR_SCALE = 4

_WHITE = (255, 255, 255)
_INK = (33, 33, 33)
_GREY = (110, 110, 110)
_RULE = (225, 225, 225)
_HEADER = (40, 52, 110)
_OK = (22, 130, 70)
_BAD = (190, 30, 30)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# DejaVu looks better than Pillow's built-in font when a distribution ships it;
# nothing is downloaded, and Pillow's own scalable font is the fallback.
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),
    Path("/usr/local/share/fonts"),
)

# A private-use code point that no font maps: what "no glyph" looks like in a font.
_UNMAPPED = "\U0010fffd"


def render_slip_png(tx: common_pb2.Transaction, qr_text: str, *, bank_name: str = "") -> bytes:
    """The transaction as a bank-app style slip (PNG bytes), with qr_text as its mini QR.

    The transaction's personal data is printed as given: issuers mask it already.
    bank_name heads the slip; by default it is the name of the sending bank.
    """
    if not qr_text:
        raise ValueError("qr_text is empty: a slip needs the text of its mini QR")
    image = Image.new("RGB", (_WIDTH, _CANVAS_HEIGHT), _WHITE)
    draw = ImageDraw.Draw(image)

    header = bank_name or _bank_name(tx.sending_bank)
    draw.rectangle((0, 0, _WIDTH, _HEADER_HEIGHT), fill=_HEADER)
    title = _font(26, bold=True)
    _text(draw, (_MARGIN, (_HEADER_HEIGHT - _height(title)) // 2), header, title, _WHITE)

    y = _HEADER_HEIGHT + 24
    if tx.status == common_pb2.TRANSACTION_STATUS_REVERSED:
        y = _text(draw, (_MARGIN, y), "REVERSED", _font(24, bold=True), _BAD)
    else:
        y = _text(draw, (_MARGIN, y), "Transfer successful", _font(24, bold=True), _OK)
    y = _text(draw, (_MARGIN, y + 4), _bangkok_time(tx), _font(16), _GREY)

    y = _text(draw, (_MARGIN, y + 20), "Amount", _font(15), _GREY)
    y = _text(draw, (_MARGIN, y + 2), _money(tx.amount), _font(38, bold=True), _INK)
    y = _text(draw, (_MARGIN, y + 4), f"Fee {_money(tx.trans_fee_amount)}", _font(15), _GREY)

    y = _rule(draw, y + 16)
    y = _party(draw, y, "From", tx.sender, tx.sending_bank)
    y = _party(draw, y + 16, "To", tx.receiver, tx.receiving_bank)
    y = _rule(draw, y + 16)

    qr = _qr_image(qr_text)
    left_width = _TEXT_WIDTH - qr.width - 16
    refs = [("Ref", tx.trans_ref)] + [
        (label, value)
        for label, value in (
            ("ref1", tx.ref1),
            ("ref2", tx.ref2),
            ("ref3", tx.ref3),
            ("toMerchantId", tx.to_merchant_id),
        )
        if value
    ]
    text_y = y + _QR_BORDER * _QR_SCALE
    for label, value in refs:
        text_y = _text(draw, (_MARGIN, text_y), label, _font(14), _GREY)
        text_y = _text(draw, (_MARGIN, text_y + 2), value, _font(16), _INK, left_width) + 10
    # Pasted last: the QR and its white quiet zone cover anything drawn under them.
    image.paste(qr, (_WIDTH - _MARGIN - qr.width, y))
    caption = _font(13)
    caption_y = y + qr.height - _QR_BORDER * _QR_SCALE + 4
    caption_x = _WIDTH - _MARGIN - (qr.width + int(caption.getlength("Scan to verify"))) // 2
    caption_y = _text(draw, (caption_x, caption_y), "Scan to verify", caption, _GREY)

    bottom = max(text_y, caption_y, y + qr.height) + _MARGIN
    out = io.BytesIO()
    image.crop((0, 0, _WIDTH, bottom)).save(out, format="PNG")
    return out.getvalue()


def decode_qr_texts(
    image: bytes | Path,
    *,
    formats: Collection[str] | None = None,
    max_pixels: int | None = None,
) -> list[str]:
    """The texts of the QR codes in an image (PNG, JPEG, ...), in reading order.

    Reading order is top to bottom, then left to right within a row. An image
    without a QR code gives []. Raises SlipImageError when the file is missing
    or is not an image (or not one of `formats`, Pillow's names: "PNG", "JPEG",
    "WEBP"), and ImageTooLarge when it has more than `max_pixels` pixels: both
    are known from the header, before anything is decoded.
    """
    source = io.BytesIO(image) if isinstance(image, bytes) else image
    what = "the image bytes" if isinstance(image, bytes) else f"image file {str(image)!r}"
    try:
        with Image.open(source, formats=None if formats is None else list(formats)) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"the image is {width}x{height} pixels, over {max_pixels:,}: "
                    "send a smaller picture of the slip"
                )
            opened.load()
            gray = _grayscale(opened)
    except FileNotFoundError as exc:
        raise SlipImageError(f"cannot read {what}: no such file") from exc
    except UnidentifiedImageError as exc:
        kinds = "a format Pillow knows" if formats is None else " or ".join(sorted(formats))
        raise SlipImageError(f"cannot read {what}: not an image in {kinds}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"cannot read {what}: {exc}") from exc
    except OSError as exc:
        raise SlipImageError(f"cannot read {what}: {exc}") from exc
    found = zxingcpp.read_barcodes(gray, formats=zxingcpp.BarcodeFormats(zxingcpp.QRCode))
    return _in_reading_order([code for code in found if code.valid])


# --- drawing ---------------------------------------------------------------


def _party(draw: ImageDraw.ImageDraw, y: int, label: str, p: common_pb2.Party, bank: str) -> int:
    """A From/To block: masked names, account, proxy and bank; returns the next y."""
    y = _text(draw, (_MARGIN, y), label, _font(15), _GREY)
    name_font = _font(20, bold=True)
    if p.display_name and p.display_name != p.name:
        # Pillow has no font fallback: a glyph the font lacks is drawn as a box
        # ("tofu"), and the fonts found here (DejaVu, Pillow's own) have no Thai.
        # So the Thai name is printed only by a font that has every glyph of it;
        # the English name, masked the same way, is always printed.
        thai_font = _font(20)
        if _has_glyphs(thai_font, p.display_name):
            y = _text(draw, (_MARGIN, y + 4), p.display_name, thai_font, _INK)
    if p.name:
        y = _text(draw, (_MARGIN, y + 4), p.name, name_font, _INK)
    details = []
    if p.HasField("account"):
        details.append(p.account.value)
    if p.HasField("proxy"):
        kind = common_pb2.ProxyType.Name(p.proxy.type).removeprefix("PROXY_TYPE_")
        details.append(f"{kind} {p.proxy.value}")
    details.append(_bank_text(bank))
    for line in details:
        y = _text(draw, (_MARGIN, y + 4), line, _font(16), _GREY)
    return y


def _text(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    text: str,
    font: _Font,
    fill: tuple[int, int, int],
    width: int = _TEXT_WIDTH,
) -> int:
    """Draws one line (shortened to fit width); returns the y below it."""
    draw.text(at, _fit(text, font, width), font=font, fill=fill)
    return at[1] + _height(font)


def _rule(draw: ImageDraw.ImageDraw, y: int) -> int:
    draw.line((_MARGIN, y, _WIDTH - _MARGIN, y), fill=_RULE, width=1)
    return y + 16


def _fit(text: str, font: _Font, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _height(font: _Font) -> int:
    return int(font.getbbox("Ag")[3])


def _qr_image(text: str) -> Image.Image:
    qr = segno.make_qr(text, error="m", boost_error=False)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=_QR_SCALE, border=_QR_BORDER)
    out.seek(0)
    with Image.open(out) as png:
        return png.convert("RGB")


@functools.cache
def _font(size: int, *, bold: bool = False) -> _Font:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in _FONT_DIRS:
        if (folder / name).is_file():
            return ImageFont.truetype(str(folder / name), size)
    # Pillow >= 10.1 with FreeType gives a scalable font; without FreeType a
    # fixed bitmap font (Latin-1 only), which still draws everything but Thai.
    return ImageFont.load_default(size=size)


def _has_glyphs(font: _Font, text: str) -> bool:
    """Whether the font draws every character of text with a glyph of its own.

    A missing glyph is not empty: it is the font's .notdef box, so a non-empty
    bounding box proves nothing. Each character is drawn alone with the basic
    layout (no shaping: a shaper would add a dotted circle under a lone Thai
    vowel mark) and compared with a code point no font maps.
    """
    if not isinstance(font, ImageFont.FreeTypeFont):
        return all(ord(ch) < 256 for ch in text)  # the bitmap font is Latin-1
    plain = font.font_variant(layout_engine=ImageFont.Layout.BASIC)
    missing = _pixels(plain, _UNMAPPED)
    return all(_pixels(plain, ch) != missing for ch in set(text) if not ch.isspace())


def _pixels(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
    size = int(font.size) * 3
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).text((size // 3, size // 3), ch, font=font, fill=255)
    return canvas.tobytes()


# --- text ------------------------------------------------------------------


def _bank_name(code: str) -> str:
    bank = BANKS.get(code)
    return bank.name if bank else f"Bank {code}"


def _bank_text(code: str) -> str:
    """'Siam Commercial Bank (014 SCB)'; the code alone for an unknown bank."""
    bank = BANKS.get(code)
    return f"{bank.name} ({bank_label(code)})" if bank else bank_label(code)


def _bangkok_time(tx: common_pb2.Transaction) -> str:
    """'27 Nov 2026 14:05 (Bangkok)', without the process locale's month names."""
    when = units.bangkok(units.from_timestamp(tx.trans_time))
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year} {when:%H:%M} (Bangkok)"


def _money(m: common_pb2.Money) -> str:
    return f"{units.format_baht(m.satang)} {m.currency or units.CURRENCY}"


# --- reading ---------------------------------------------------------------


def _grayscale(image: Image.Image) -> Image.Image:
    """8-bit grayscale as zxing-cpp reads it, upright, transparency laid on white."""
    upright = ImageOps.exif_transpose(image)
    if upright.has_transparency_data:
        rgba = upright.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        upright = Image.alpha_composite(background, rgba)
    return upright.convert("L")


class _Found(NamedTuple):
    top: int
    bottom: int
    left: int
    text: str


def _in_reading_order(codes: list[zxingcpp.Barcode]) -> list[str]:
    """Rows from the top (a code whose top is above the middle of a row's first
    code belongs to that row), each row from the left."""
    found = []
    for code in codes:
        corners = (
            code.position.top_left,
            code.position.top_right,
            code.position.bottom_right,
            code.position.bottom_left,
        )
        ys = [p.y for p in corners]
        found.append(_Found(min(ys), max(ys), min(p.x for p in corners), code.text))
    rows: list[list[_Found]] = []
    for item in sorted(found):
        if rows and item.top < (rows[-1][0].top + rows[-1][0].bottom) / 2:
            rows[-1].append(item)
        else:
            rows.append([item])
    return [item.text for row in rows for item in sorted(row, key=lambda f: f.left)]
