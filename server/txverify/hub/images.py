"""Slip images in a VerifyRequest: the slip's mini QR read off the event loop, at low priority.

A slip image costs the hub milliseconds of CPU to decode (3.5 ms for a
rendered 600-pixel slip, tens for a phone photo), a QR text microseconds. So
images are decoded in a small pool of threads (Pillow and zxing-cpp release the
GIL while they decode) whose scheduling priority is lowered (nice 10 on Linux):
when the CPU is busy, the loop answering QR texts runs first and images take
what is left, instead of images starving QR texts. At most `max_waiting`
images wait for the pool (each holds up to MAX_IMAGE_BYTES); past that an
image is answered SLIP_IMAGE_BUSY with a retry delay rather than queued
without bound. Admission (identity, membership, rate limit) comes first, so
only members' images are ever decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from txverify import miniqr
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.wire import MAX_SLIP_IMAGE_BYTES, MAX_SLIP_IMAGE_PIXELS

log = logging.getLogger(__name__)

# A phone's slip screenshot is 0.1-1 MB; 25 M pixels is a 4000x6000 photo (Pillow warns of
# a decompression bomb at 89 M).
MAX_IMAGE_BYTES, MAX_PIXELS = MAX_SLIP_IMAGE_BYTES, MAX_SLIP_IMAGE_PIXELS
FORMATS = ("PNG", "JPEG", "WEBP")  # what banking apps save; GIF, TIFF, BMP... are refused
NICE = 10  # added to the decoding threads' niceness (CFS weight 110 against the loop's 1024)
BUSY_RETRY = 1.0  # seconds a caller is told to wait when the pool's queue is full


def _lower_priority() -> None:
    """Run in each decoding thread as it starts: Linux schedules threads one by one."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            me = threading.get_native_id()  # the thread: Linux's niceness is per thread
            os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + NICE)


def _image_error(reason: Reason, message: str, **metadata: str) -> ServiceError:
    return ServiceError(
        reason,
        message,
        metadata={"field": "slip_image", **metadata},
        violations=(FieldViolation("slip_image", message),),
    )


def read_texts(image: bytes) -> list[str]:
    """The QR texts of an image (run in the pool), or the ServiceError saying why none."""
    from txverify.slipimage import ImageTooLarge, SlipImageError, decode_qr_texts

    try:
        return decode_qr_texts(image, formats=FORMATS, max_pixels=MAX_PIXELS)
    except ImageTooLarge as exc:
        raise _image_error(Reason.SLIP_IMAGE_TOO_LARGE, str(exc)) from None
    except SlipImageError as exc:
        raise _image_error(
            Reason.SLIP_IMAGE_UNREADABLE, f"slip_image is not a PNG, JPEG or WebP image: {exc}"
        ) from None


def slip_qr_of(texts: list[str]) -> str:
    """The one slip QR among an image's QR codes, or the ServiceError saying why not one."""
    slips: dict[tuple[str, str], str] = {}
    failures: list[miniqr.InvalidSlipQR] = []
    for text in texts:
        try:
            ref = miniqr.parse(text)
        except miniqr.InvalidSlipQR as exc:
            failures.append(exc)
            continue
        slips.setdefault((ref.sending_bank, ref.trans_ref), text)
    if len(slips) == 1:
        return next(iter(slips.values()))
    if len(slips) > 1:
        named = ", ".join(f"{bank}/{ref}" for bank, ref in sorted(slips))
        raise _image_error(
            Reason.SLIP_IMAGE_SEVERAL_SLIPS,
            f"the image holds {len(slips)} different slip QRs ({named}): send one slip per request",
            slips=str(len(slips)),
        )
    if not texts:
        raise _image_error(
            Reason.SLIP_IMAGE_NO_QR, "no QR code found in slip_image: send the slip with its QR"
        )
    first = failures[0]
    raise _image_error(
        Reason.SLIP_IMAGE_NOT_A_SLIP,
        f"the QR code in slip_image is not a slip QR (a payment QR?): {first}",
        qr_reason=first.reason.value,
    )


class ImageDecoder:
    """Reads the slip QR of images in a bounded pool of low-priority threads."""

    def __init__(self, workers: int = 1, max_waiting: int = 16) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self._pool: ThreadPoolExecutor | None = None  # made at the first image
        self._pending = 0  # images decoding or waiting for a thread

    async def slip_qr(self, image: bytes) -> str:
        """The slip QR text in `image`, or ServiceError with the image's own reason."""
        if len(image) > MAX_IMAGE_BYTES:
            raise _image_error(
                Reason.SLIP_IMAGE_TOO_LARGE,
                f"slip_image is {len(image):,} bytes, over {MAX_IMAGE_BYTES // 1024 // 1024} MiB",
                limit_bytes=str(MAX_IMAGE_BYTES),
            )
        if self._pending >= self.workers + self.max_waiting:
            raise ServiceError(
                Reason.SLIP_IMAGE_BUSY,
                f"{self._pending} slip images are being read; retry in {BUSY_RETRY:.0f}s "
                "(or send the QR text)",
                retry_after=BUSY_RETRY,
            )
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.workers, thread_name_prefix="slip-image", initializer=_lower_priority
            )
        self._pending += 1
        try:
            texts = await asyncio.get_running_loop().run_in_executor(self._pool, read_texts, image)
        finally:
            self._pending -= 1
        return slip_qr_of(texts)

    def close(self) -> None:
        """Stop the pool: queued images are dropped (their callers are gone by now)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
