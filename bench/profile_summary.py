"""Where the hub's samples go, from py-spy's collapsed stacks (harness.py --profile FILE.txt).

    python bench/harness.py --seconds 15 --rounds 1 --no-h2load --profile profile-hub.txt
    python bench/profile_summary.py profile-hub.txt [--top 25]

Prints the share of all samples (every thread) that each function holds itself
(self) and with what it calls (total), and the share per part of the code: our
packages (server, txverify, simulators, clients) by module, gRPC, asyncio/uvloop,
idle. A stack is counted once per function, however often it recurses.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy raw frames: "function (path/to/file.py:LINE)"; native and idle ones lack a path.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
_OURS = ("/txverify/",)  # every source root holds the txverify namespace


def _frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw.strip())
    if match is None:
        return raw.strip(), ""
    return match["func"], match["file"]


def _part(path: str) -> str:
    for root in _OURS:
        at = path.find(root)
        if at >= 0:
            return path[at:]
    if "grpc" in path:
        return "grpc"
    if "asyncio" in path or "uvloop" in path:
        return "asyncio/uvloop"
    if "logging" in path:
        return "logging"
    if "sqlite" in path:
        return "sqlite3"
    return "other" if path else "native/idle"


def summarise(lines: list[str], top: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame(f) for f in stack.split(";")]
        names = [f"{func} ({_part(path)})" for func, path in frames]
        own[names[-1]] += count
        parts[_part(frames[-1][1])] += count
        for name in set(names):
            total[name] += count
    if samples == 0:
        return "no samples"
    out = [f"{samples} samples"]
    out.append("\nself time by part of the code:")
    out += [f"  {n / samples:6.1%}  {name}" for name, n in parts.most_common(top)]
    out.append("\nself time by function:")
    out += [f"  {n / samples:6.1%}  {name}" for name, n in own.most_common(top)]
    out.append("\ntotal time (with callees) by function of our code:")
    ours = [(k, v) for k, v in total.items() if any(r in k for r in _OURS)]
    ours.sort(key=lambda kv: -kv[1])
    out += [f"  {n / samples:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.stacks.read_text().splitlines(), args.top))


if __name__ == "__main__":
    main()
