"""A slip-image decoder process: `python -m txverify.hub.imageworker`, started by the hub.

It reads frames from stdin (4-byte big-endian length, then the image bytes) and
answers each on stdout (4-byte length, then JSON {"texts": [...]} or
{"reason": "SLIP_IMAGE_...", "message": "..."}), one image at a time, until
stdin closes. It runs at the lowest CPU priority there is (SCHED_IDLE, nice 19
where SCHED_IDLE is missing) and dies with the hub (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from typing import BinaryIO

from txverify.errors import Reason
from txverify.wire import MAX_SLIP_IMAGE_BYTES, MAX_SLIP_IMAGE_PIXELS

FORMATS = ("PNG", "JPEG", "WEBP")  # what banking apps save; GIF, TIFF, BMP... are refused
NICE = 19
_PR_SET_PDEATHSIG = 1


def lowest_priority() -> None:
    """SCHED_IDLE: any ordinary task that wakes on this CPU runs at once, ahead of a decode
    (plain niceness still lets a decoder finish its slice first); nice 19 besides."""
    with contextlib.suppress(OSError):
        os.nice(NICE - os.nice(0))
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def read_texts(image: bytes) -> dict[str, object]:
    """The QR texts of an image, or the reason and message why none can be read."""
    from txverify.slipimage import ImageTooLarge, SlipImageError, decode_qr_texts

    try:
        return {"texts": decode_qr_texts(image, formats=FORMATS, max_pixels=MAX_SLIP_IMAGE_PIXELS)}
    except ImageTooLarge as exc:
        return {"reason": Reason.SLIP_IMAGE_TOO_LARGE.value, "message": str(exc)}
    except SlipImageError as exc:
        return {
            "reason": Reason.SLIP_IMAGE_UNREADABLE.value,
            "message": f"slip_image is not a PNG, JPEG or WebP image: {exc}",
        }


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answer frames until the source closes."""
    while (header := _read_exactly(source, 4)) is not None:
        size = int.from_bytes(header, "big")
        if size > MAX_SLIP_IMAGE_BYTES:  # the hub checks first: a broken frame, stop
            return
        image = _read_exactly(source, size)
        if image is None:
            return
        answer = json.dumps(read_texts(image)).encode()
        sink.write(len(answer).to_bytes(4, "big") + answer)
        sink.flush()


def main() -> None:
    lowest_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the hub's to handle
    import txverify.slipimage  # noqa: F401  # imported before the first image, not during it

    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
