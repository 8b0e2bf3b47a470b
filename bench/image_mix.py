"""QR-text verifications while slip images are read as fast as the hub's pool allows.

    python bench/image_mix.py [--seconds 5] [--rounds 3] [--image-streams 8] [--json FILE]
    make bench-images

The hub reads VerifyRequest.slip_image in decoder processes at the lowest CPU
priority (server/txverify/hub/images.py). What must hold: QR-text throughput at full
load with images arriving as fast as they are answered stays >= 0.8x of the
throughput without images. Per round, alternating the order: h2load's closed
loop of QR texts alone; the same beside a second h2load sending slip images
(closed loop, --image-streams in flight); and the images alone (the pool's own
rate). Prints each measurement, the medians and
the ratio, with CPU seconds per 1,000 requests of the hub.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]

from harness import REQUESTER, Bench, bench_settings  # noqa: E402
from txverify.cli.faultlab.processes import cpu_seconds  # noqa: E402
from txverify.slipimage import render_slip_png  # noqa: E402
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc  # noqa: E402


def image_load(
    address: str, body: Path, seconds: float, streams: int, log: Path
) -> subprocess.Popen[str]:
    """h2load's closed loop of Verify with a slip image: `streams` in flight on one connection.

    h2load (C) rather than a Python client: the image load must cost the shared cores
    as little as the QR-text load does, or the ratio would measure the load source."""
    log.unlink(missing_ok=True)
    return subprocess.Popen(
        ["h2load", "-c", "1", "-m", str(streams), "-D", str(max(1, round(seconds))),
         "--log-file", str(log), "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         "-H", f"x-member-id: {REQUESTER}",
         f"http://{address}/txverify.v1.VerificationService/Verify"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def image_answers(log: Path, seconds: float) -> dict[str, Any]:
    """Images answered per second and their median latency, from h2load's log."""
    times = sorted(
        int(line.split("\t")[2])
        for line in log.read_text().splitlines()
        if line.count("\t") == 2 and line.split("\t")[1] == "200"
    )
    return {
        "answers": {"OK": len(times)},
        "images_per_s": len(times) / max(1, round(seconds)),
        "p50_ms": times[len(times) // 2] / 1000 if times else float("nan"),
    }


def _check_image(address: str, image: bytes) -> None:
    """One slip image must verify OK through the hub, or the bench measures errors."""
    with grpc.insecure_channel(address) as channel:
        answer = verification_pb2_grpc.VerificationServiceStub(channel).Verify(
            verification_pb2.VerifyRequest(slip_image=image),
            metadata=(("x-member-id", REQUESTER),),
            timeout=30,
        )
    if not answer.transaction.trans_ref:
        raise RuntimeError("the hub answered a slip image without a transaction")


def _images(qrs: list[str]) -> list[bytes]:
    return [render_slip_png(common_pb2.Transaction(trans_ref="image"), qr) for qr in qrs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-streams", type=int, default=8, help="images in flight")
    parser.add_argument("--json", type=Path, default=Path("bench-images.json"))
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        parser.error("h2load is not installed: make bench-tools")
    settings = bench_settings(args.seconds)
    runs: dict[str, list[dict[str, Any]]] = {"text": [], "text+images": [], "images": []}
    with tempfile.TemporaryDirectory(prefix="txverify-images-") as tmpdir:
        bench = Bench(settings, Path(tmpdir))
        bench.start()
        bench.servers.pop("yardstick").stop()
        hub, banks = bench.servers["hub"], bench.banks
        assert banks is not None
        image = _images(bench.qrs[:1])[0]
        request = verification_pb2.VerifyRequest(slip_image=image).SerializeToString()
        body = Path(tmpdir) / "image.grpc"
        body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
        image_log = Path(tmpdir) / "h2load-images.log"
        try:
            try:
                _check_image(hub.address, image)  # and the decoder process is started
            except grpc.RpcError:
                print((Path(tmpdir) / "hub.log").read_text()[-3000:], file=sys.stderr)
                raise
            bench.loadgen("hub", "max", 0)  # warm-up
            for rnd in range(1, args.rounds + 1):
                order = ["text", "text+images", "images"]
                for mode in order if rnd % 2 else order[::-1]:
                    cpu0, main0, banks0 = hub.cpu(), cpu_seconds(hub.popen.pid), banks.cpu()
                    t0 = time.perf_counter()
                    client = None
                    if mode != "text":
                        client = image_load(
                            hub.address, body, args.seconds, args.image_streams, image_log
                        )
                    run = bench.h2load("hub", rnd) if mode != "images" else None
                    images: dict[str, Any] = {}
                    if client is not None:
                        client.communicate(timeout=args.seconds + 30)
                        images = image_answers(image_log, args.seconds)
                    elapsed = time.perf_counter() - t0
                    hub_main = cpu_seconds(hub.popen.pid) - main0
                    cores = {
                        "hub": round(hub_main / elapsed, 2),
                        "decoders": round((hub.cpu() - cpu0 - hub_main) / elapsed, 2),
                        "banks": round((banks.cpu() - banks0) / elapsed, 2),
                    }
                    answered = (run.requests if run else 0) + sum(
                        images.get("answers", {}).values()
                    )
                    row = {
                        "round": rnd,
                        "text_rps": run.rps if run else 0.0,
                        "text_p99_ms": run.p99_ms if run else float("nan"),
                        "images_per_s": images.get("images_per_s", 0.0),
                        "image_p50_ms": images.get("p50_ms", float("nan")),
                        "image_answers": images.get("answers", {}),
                        "hub_cpu_s_per_1k": (hub.cpu() - cpu0) / max(1, answered) * 1000,
                        "seconds": round(elapsed, 1),
                        "cores": cores,
                    }
                    runs[mode].append(row)
                    print(
                        f"{mode:<12} {rnd:>2}  text {row['text_rps']:7.0f} req/s  "
                        f"p99 {row['text_p99_ms']:6.1f} ms  images {row['images_per_s']:6.1f}/s "
                        f"(p50 {row['image_p50_ms']:6.1f} ms) {row['image_answers']}  "
                        f"hub CPU s/1k {row['hub_cpu_s_per_1k']:.3f}  cores {cores}",
                        flush=True,
                    )
        finally:
            bench.stop()

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[mode]))

    # Each round's own ratio (the two runs are back to back), then their median: the
    # machine's speed drifts over minutes by more than the effect measured.
    ratios = [
        with_images["text_rps"] / alone["text_rps"]
        for alone, with_images in zip(runs["text"], runs["text+images"], strict=True)
    ]
    ratio = statistics.median(ratios)
    summary = {
        "text_rps": med("text", "text_rps"),
        "text_rps_with_images": med("text+images", "text_rps"),
        "ratio": round(ratio, 3),
        "ratios_per_round": [round(r, 3) for r in ratios],
        "images_per_s_with_text": med("text+images", "images_per_s"),
        "images_per_s_alone": med("images", "images_per_s"),
        "image_streams": args.image_streams,
    }
    print(
        f"\nmedians: QR texts {summary['text_rps']:.0f} req/s alone, "
        f"{summary['text_rps_with_images']:.0f} with images: {ratio:.2f}x, the median of the "
        f"rounds' {', '.join(f'{r:.2f}' for r in ratios)} (target >= 0.8x); "
        f"images {summary['images_per_s_with_text']:.1f}/s beside them, "
        f"{summary['images_per_s_alone']:.1f}/s alone"
    )
    args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
