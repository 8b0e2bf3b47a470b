"""Slip images in a VerifyRequest: the slip's mini QR read in other processes, at low priority.

A slip image costs milliseconds of CPU to decode (5 ms for a rendered
600-pixel slip, tens for a phone photo), a QR text microseconds. So images are
decoded by a few decoder processes (txverify.hub.imageworker) at the lowest CPU
priority there is (SCHED_IDLE): when the CPU is busy, the hub's loop answering
QR texts runs first and images take what is left. The hub talks to them over
pipes on its own event loop (a length-prefixed frame each way), with no thread
of its own: threads were measured first (bench/image_mix.py) and, even at nice
10, shared the hub's GIL; a ProcessPoolExecutor adds two threads that do. A
decoder that crashes on an image takes only its process: a new one is started
and the image answered SLIP_IMAGE_UNREADABLE. At most `max_waiting` images
wait for a decoder (each holds up to MAX_IMAGE_BYTES); past that an image is
answered SLIP_IMAGE_BUSY with a retry delay rather than queued without bound.
Admission (identity, membership, rate limit) comes first, so only members'
images are ever decoded. Decoders start at the first image: a hub that reads
none pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections import deque
from collections.abc import Coroutine
from typing import Any

from txverify import miniqr
from txverify.errors import FieldViolation, Reason, ServiceError
from txverify.wire import MAX_SLIP_IMAGE_BYTES

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = MAX_SLIP_IMAGE_BYTES  # a phone's slip screenshot is 0.1-1 MB
BUSY_RETRY = 1.0  # seconds a caller is told to wait when the queue is full
STOP_WAIT = 2.0  # seconds a decoder gets to exit once its stdin closes


def _image_error(reason: Reason, message: str, **metadata: str) -> ServiceError:
    return ServiceError(
        reason,
        message,
        metadata={"field": "slip_image", **metadata},
        violations=(FieldViolation("slip_image", message),),
    )


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


class _Decoder:
    """One decoder process, asked one image at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Decoder:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "txverify.hub.imageworker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def read(self, image: bytes) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(len(image).to_bytes(4, "big") + image)
        await stdin.drain()
        size = int.from_bytes(await stdout.readexactly(4), "big")
        answer: dict[str, Any] = json.loads(await stdout.readexactly(size))
        return answer

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


class ImageDecoder:
    """Reads the slip QR of images with up to `workers` low-priority decoder processes."""

    def __init__(self, workers: int = 1, max_waiting: int = 16) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self._idle: list[_Decoder] = []
        self._all: set[_Decoder] = set()
        self._starting = 0
        self._waiting: deque[asyncio.Future[_Decoder]] = deque()
        self._pending = 0  # images being read or waiting for a decoder
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # stops and restarts under way

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pids(self) -> list[int]:
        """The decoder processes now running (for tests and operators)."""
        return sorted(d.proc.pid for d in self._all)

    async def slip_qr(self, image: bytes) -> str:
        """The slip QR text in `image`, or ServiceError with the image's own reason."""
        if len(image) > MAX_IMAGE_BYTES:
            raise _image_error(
                Reason.SLIP_IMAGE_TOO_LARGE,
                f"slip_image is {len(image):,} bytes, over {MAX_IMAGE_BYTES // 1024 // 1024} MiB",
                limit_bytes=str(MAX_IMAGE_BYTES),
            )
        if self._pending >= self.workers + self.max_waiting or self._closed:
            raise ServiceError(
                Reason.SLIP_IMAGE_BUSY,
                f"{self._pending} slip images are being read; retry in {BUSY_RETRY:.0f}s "
                "(or send the QR text)",
                retry_after=BUSY_RETRY,
            )
        self._pending += 1
        try:
            decoder = await self._take()
            # The read goes on if the caller goes away, so that the decoder's answer is
            # never left in its pipe for the next image; then the decoder is given back.
            reading = asyncio.ensure_future(decoder.read(image))
            reading.add_done_callback(lambda done: self._returned(decoder, done))
            try:
                answer = await asyncio.shield(reading)
            except (asyncio.IncompleteReadError, OSError, ValueError):
                raise _crashed() from None  # the decoder died on this image (or its pipe broke)
        finally:
            self._pending -= 1
        if "reason" in answer:
            raise _image_error(Reason(answer["reason"]), str(answer.get("message", "")))
        return slip_qr_of(list(answer["texts"]))

    async def _take(self) -> _Decoder:
        if self._idle:
            return self._idle.pop()
        if len(self._all) + self._starting < self.workers:
            self._starting += 1
            try:
                decoder = await _Decoder.start()
            finally:
                self._starting -= 1
            self._all.add(decoder)
            return decoder
        turn: asyncio.Future[_Decoder] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._give(turn.result())  # handed to us as we were cancelled
            else:
                self._waiting.remove(turn)
            raise

    def _returned(self, decoder: _Decoder, reading: asyncio.Future[dict[str, Any]]) -> None:
        if reading.cancelled() or reading.exception() is not None:
            # A decoder that died (or whose pipe broke) is replaced at the next image.
            why = "cancelled" if reading.cancelled() else repr(reading.exception())
            log.error("a slip image decoder stopped (%s); a new one starts when needed", why)
            self._all.discard(decoder)
            self._later(decoder.stop())
            if self._waiting and not self._closed:  # a new decoder for whoever waits
                self._later(self._replace())
            return
        self._give(decoder)

    async def _replace(self) -> None:
        self._starting += 1
        try:
            decoder = await _Decoder.start()
        except OSError:
            log.exception("cannot start a slip image decoder")
            while self._waiting:
                turn = self._waiting.popleft()
                if not turn.done():
                    turn.set_exception(_crashed())
            return
        finally:
            self._starting -= 1
        self._all.add(decoder)
        self._give(decoder)

    def _give(self, decoder: _Decoder) -> None:
        if self._closed:
            self._later(decoder.stop())
            return
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(decoder)
                return
        self._idle.append(decoder)

    async def close(self) -> None:
        """Stop the decoders (their stdin closes, they exit); waiting images are refused."""
        self._closed = True
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_exception(_crashed())
        decoders, self._idle = list(self._all), []
        self._all.clear()
        await asyncio.gather(*(d.stop() for d in decoders), *self._tasks, return_exceptions=True)


def _crashed() -> ServiceError:
    return _image_error(Reason.SLIP_IMAGE_UNREADABLE, "slip_image could not be decoded")
