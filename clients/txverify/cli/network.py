"""`txverify up`: the hub and simulated banks as separate processes, supervised together."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from txverify.cli import nginx
from txverify.client.channels import hub_channel
from txverify.runtime import tls

DEFAULT_BANKS = ("002", "004", "006", "011", "014", "025", "030", "069", "900")
READY_PREFIX = "TXVERIFY-READY "
STARTUP_TIMEOUT = 60.0
DEFAULT_CONSOLE_PORT = 50080
DEFAULT_JSON_PORT = 50081  # the hub's JSON API under `txverify up`
NETWORK_ENV = "TXVERIFY_NETWORK"


class NetworkError(RuntimeError):
    """The network could not start or be found; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class BankInfo:
    """One simulated member as the simulator reports it once it listens."""

    code: str
    short_name: str
    name: str
    kind: str  # BANK or NON_BANK
    address: str  # its IssuerService
    samples: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Network:
    """A running network: where the hub and the simulator's control API listen."""

    hub_address: str
    control_address: str
    banks: list[BankInfo]
    procs: list[subprocess.Popen[str]]
    certs: Path | None = None  # certificate directory when running with mTLS
    replicas: list[str] = field(default_factory=list)  # hub processes behind nginx, if any
    replica_procs: list[subprocess.Popen[str]] = field(default_factory=list)
    console: str = ""  # the web console's URL, when the hub serves one
    console_token: str = field(default="", repr=False)  # its operator token
    json_api: str = ""  # the JSON API's base URL, when the hub serves one

    def to_json(self) -> str:
        return json.dumps(
            {
                "hub": self.hub_address,
                "control": self.control_address,
                # The member the CLI speaks for by default (a service provider).
                "member": self.banks[0].code if self.banks else "",
                "certs": str(self.certs) if self.certs else "",
                "replicas": self.replicas,
                "console": self.console,
                "json_api": self.json_api,
                "banks": [asdict(b) | {"samples": []} for b in self.banks],
                "pid": os.getpid(),
            },
            indent=2,
        )


def network_file() -> Path:
    """Where `txverify up` records the running network for the other commands."""
    configured = os.environ.get(NETWORK_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"txverify-{os.getuid()}" / "network.json"


def load_network() -> dict[str, Any]:
    """The network `txverify up` recorded, or NetworkError saying how to get one."""
    path = network_file()
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NetworkError(
            f"no running network recorded at {path}: start one with `txverify up` "
            "(or pass the address explicitly)"
        ) from None
    return data


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "txverify.cli", *args]


def read_ready(stream: IO[str], proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """Wait for the child's ready line on stdout; fail clearly if it exits first."""
    for line in stream:
        if line.startswith(READY_PREFIX):
            ready: dict[str, Any] = json.loads(line[len(READY_PREFIX) :])
            return ready
    code = proc.wait()
    raise NetworkError(f"{what} exited with code {code} before it was ready (see its log above)")


def wait_serving(address: str, timeout: float, *, certs: Path | None = None) -> None:
    """Poll grpc.health.v1 until the hub at `address` says SERVING (over mTLS as the
    operator when `certs` is given, accepting only the hub's certificate)."""
    deadline = time.monotonic() + timeout
    with hub_channel(address, certs=certs, identity=tls.OPERATOR) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise NetworkError(f"{address} did not become healthy within {timeout:.0f}s")
            time.sleep(0.1)


def members_toml(banks: Sequence[BankInfo]) -> str:
    lines = []
    for bank in banks:
        lines += [
            "[[member]]",
            f'code = "{bank.code}"',
            f"name = {json.dumps(bank.name)}",  # a JSON string is a valid TOML basic string
            f'kind = "{bank.kind}"',
            f'issuer_endpoint = "{bank.address}"',
            "",
        ]
    return "\n".join(lines)


@contextlib.contextmanager
def running_network(
    *,
    banks: Sequence[str],
    hub_host: str,
    hub_port: int,
    seed: int,
    transactions: int,
    data_dir: Path | None,
    extra_sim_args: Sequence[str] = (),
    use_tls: bool = False,
    certs: Path | None = None,
    replicas: int = 0,
    db: str | None = None,
    hub_extra_args: Sequence[str] = (),
    console_port: int | None = None,
    json_port: int | None = None,
) -> Iterator[Network]:
    """Start the simulator process, then the hub pointed at its banks; stop both on exit.

    replicas > 0: that many hub processes (each on a port of its own, all on `db`)
    behind nginx, which listens at hub_host:hub_port (`txverify cluster up`).
    console_port: the hub serves the web console there, with fault controls acting
    on the simulator (one hub only: not with replicas).
    """
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="txverify-") as tmp:
        workdir = data_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        record = network_file()
        if use_tls:
            certs = certs or workdir / "certs"
            try:
                tls.init_dev_pki(certs, banks)  # keeps an existing CA, adds what is missing
            except (ValueError, OSError) as exc:
                raise NetworkError(f"certificates in {certs}: {exc}") from None
        try:
            sim_args = ["banks", "--codes", ",".join(banks), "--seed", str(seed)]
            sim_args += ["--transactions", str(transactions), "--host", hub_host]
            if data_dir is not None:
                sim_args += ["--data", str(data_dir)]
            if use_tls:
                sim_args += ["--certs", str(certs)]
            sim = subprocess.Popen(
                cli_argv(*sim_args, *extra_sim_args), stdout=subprocess.PIPE, text=True
            )
            procs.append(sim)
            assert sim.stdout is not None
            ready = read_ready(sim.stdout, sim, "the simulated banks")
            infos = [
                BankInfo(
                    b["code"],
                    b["short_name"],
                    b["name"],
                    b["kind"],
                    b["address"],
                    tuple(b["samples"]),
                )
                for b in ready["banks"]
            ]
            members = workdir / "members.toml"
            members.write_text(members_toml(infos), encoding="utf-8")
            hub_args = ["--members", str(members), "--host", hub_host, *hub_extra_args]
            # The database URL (it may hold a password) goes in the environment, not
            # in argv, where `ps` shows it to every user of the machine.
            # The hub's own TXVERIFY_HUB_* from this shell are left out: the network's
            # flags decide, as they did before the hub read the environment.
            hub_env = {k: v for k, v in os.environ.items() if not k.startswith("TXVERIFY_HUB_")}
            if db is not None:
                hub_env["TXVERIFY_HUB_DB"] = db
            elif data_dir is not None:
                hub_env["TXVERIFY_HUB_DB"] = f"sqlite:///{(data_dir / 'hub.sqlite').resolve()}"
            if use_tls:
                hub_args += ["--certs", str(certs)]
            if console_port is not None and not replicas:
                hub_args += ["--console", str(console_port),
                             "--console-simulator", ready["control"]]  # fmt: skip
            if json_port is not None and not replicas:
                hub_args += ["--json-port", str(json_port)]
            addresses: list[str] = []
            console: dict[str, Any] = {}
            replica_procs: list[subprocess.Popen[str]] = []
            for n in range(replicas or 1):
                hub = subprocess.Popen(
                    cli_argv("hub", *hub_args, "--port", "0" if replicas else str(hub_port),
                         "--ready-line"),
                    stdout=subprocess.PIPE,
                    text=True,
                    env=hub_env,
                )  # fmt: skip
                procs.append(hub)
                if replicas:
                    replica_procs.append(hub)
                assert hub.stdout is not None
                name = f"hub replica {n + 1}" if replicas else "the hub"
                hub_ready = read_ready(hub.stdout, hub, name)
                addresses.append(hub_ready["address"])
                console = console or hub_ready
            hub_address = addresses[0]
            if replicas:
                port = hub_port or nginx.free_port(hub_host)
                hub_address = f"{hub_host}:{port}"
                try:
                    procs.append(nginx.start(workdir / "nginx", hub_address, addresses))
                except nginx.NginxError as exc:
                    raise NetworkError(str(exc)) from None
            network = Network(
                hub_address,
                ready["control"],
                infos,
                procs,
                certs if use_tls else None,
                addresses if replicas else [],
                replica_procs,
                console.get("console", ""),
                console.get("console_token", ""),
                console.get("json_api", ""),
            )
            # Under mTLS as the operator, and only if the hub's certificate is the hub's.
            wait_serving(hub_address, STARTUP_TIMEOUT, certs=certs if use_tls else None)
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(network.to_json(), encoding="utf-8")
            yield network
        finally:
            stop_all(procs)
            with contextlib.suppress(OSError, ValueError):
                if json.loads(record.read_text(encoding="utf-8")).get("pid") == os.getpid():
                    record.unlink()


def wait_any(procs: Sequence[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """Block until one of the processes exits; return it."""
    while True:
        for proc in procs:
            if proc.poll() is not None:
                return proc
        time.sleep(0.2)


def stop_all(procs: Sequence[subprocess.Popen[str]], grace: float = 8.0) -> None:
    """SIGTERM every child still running, wait for them to drain, then SIGKILL stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def resolve_target(
    hub: str | None, member: str, certs: Path | None, *, default_hub: str
) -> tuple[str, str, Path | None]:
    """Hub, member to speak for and certificates: as given, else as `txverify up` recorded."""
    try:
        network = load_network()
    except NetworkError:
        network = {}
    if hub is not None and hub != network.get("hub"):
        network = {}  # another hub: what was recorded is not about it
    recorded = network.get("certs")
    return (
        hub or network.get("hub", default_hub),
        member or network.get("member", ""),
        certs or (Path(recorded) if recorded else None),
    )
