"""Processes under measurement: `txverify banks` and `txverify hub` started with --ready-line,
their CPU and memory read from /proc (with their children), the members file for a hub
routing to the banks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txverify.cli.network import cli_argv

READY = "TXVERIFY-READY "


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (hub workers are children of the supervisor)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def _stat_cpu(pid: int) -> float:
    """CPU seconds of a process; 0 for one that has just gone (a worker that exited)."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Server:
    """A process under measurement (with its children)."""

    name: str
    popen: subprocess.Popen[str]
    address: str = ""
    ready: dict[str, Any] = field(default_factory=dict)

    def cpu(self) -> float:
        return sum(_stat_cpu(p) for p in process_tree(self.popen.pid))

    def rss_mb(self) -> float:
        return sum(status_kb(p, "VmRSS") for p in process_tree(self.popen.pid)) / 1024

    def peak_rss_mb(self) -> float:
        """Peak RSS of the biggest process of the tree (VmHWM), in MB."""
        return max(status_kb(p, "VmHWM") for p in process_tree(self.popen.pid)) / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start_server(name: str, argv: list[str], log: Path) -> Server:
    with log.open("w") as stderr:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    server = Server(name, popen)
    assert popen.stdout is not None
    for line in popen.stdout:
        if line.startswith(READY):
            server.ready = json.loads(line[len(READY) :])
            server.address = server.ready.get("address", "")
            return server
    raise RuntimeError(f"{name} exited before it was ready; see {log}")


def write_members(path: Path, banks_ready: dict[str, Any]) -> None:
    """The members file for a hub routing to the banks of a `txverify banks` ready line."""
    path.write_text(
        "".join(
            f'[[member]]\ncode = "{b["code"]}"\nname = "{b["name"]}"\n'
            f'issuer_endpoint = "{b["address"]}"\n\n'
            for b in banks_ready["banks"]
        )
    )


def start_banks(work: Path, *args: str) -> tuple[Server, Path]:
    """`txverify banks ARGS` (log in WORK/banks.log) and the members file for a hub
    routing to them (WORK/members.toml)."""
    banks = start_server("banks", cli_argv("banks", *args), work / "banks.log")
    members = work / "members.toml"
    try:
        write_members(members, banks.ready)
    except BaseException:
        banks.stop()
        raise
    return banks, members
