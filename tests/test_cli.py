"""The CLI as users run it: `txverify up` in one process, `txverify verify` in another."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import impostor_hub, loopback_member_pki, stop_process
from txverify import miniqr, units
from txverify.runtime import tls
from txverify.v1 import simulator_pb2, simulator_pb2_grpc

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

STARTUP_SECONDS = 30


@dataclass(frozen=True)
class UpNetwork:
    proc: subprocess.Popen[str]
    hub: str
    sample_qrs: list[str]
    record: Path  # the network file it wrote


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "txverify.cli", *args]


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


MEMBERS = 9  # eight banks and the e-wallet


def _up(record: Path) -> Iterator[UpNetwork]:
    """`txverify up`, recording its network in `record`, until the fixture ends."""
    proc = subprocess.Popen(
        _cli(
            "up",
            "--port",
            "0",
            "--console",
            "0",
            "--json-port",
            "0",
            "--seed",
            "7",
            "--transactions",
            "200",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TXVERIFY_NETWORK": str(record)},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    hub, qrs = "", list[str]()
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while len(qrs) < MEMBERS and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if match := re.search(r"hub at (\S+)", line):
                hub = match.group(1)
            # As this command was started: `python -m txverify.cli verify QR`.
            if match := re.search(r"-m txverify\.cli verify (\S+)", line):
                qrs.append(match.group(1))
        assert hub, "txverify up did not print the hub address"
        assert MEMBERS == len(qrs), "txverify up did not print a sample slip per member"
        yield UpNetwork(proc, hub, qrs, record)
    finally:
        stop_process(proc, signal.SIGINT)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpNetwork]:
    """One `txverify up` for the module's tests (starting one takes ~4 s). Each test
    verifies in a scope of its own (see _verify), so no test sees another's slips as
    duplicates; tests that change the network put it back."""
    yield from _up(tmp_path_factory.mktemp("up") / "network.json")


@pytest.fixture
def own_network(tmp_path: Path) -> Iterator[UpNetwork]:
    """A `txverify up` of the test's own, for tests that stop it."""
    yield from _up(tmp_path / "network.json")


@pytest.fixture(autouse=True)
def _network_file(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI finds the network the test uses; a test without one, none."""
    for name in ("network", "own_network"):
        if name in request.fixturenames:
            up: UpNetwork = request.getfixturevalue(name)
            monkeypatch.setenv("TXVERIFY_NETWORK", str(up.record))
            return
    monkeypatch.setenv("TXVERIFY_NETWORK", str(tmp_path / "network.json"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=30, check=False)


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    """`txverify verify ARGS`, counted in a scope of this test's own (a reference named
    after it) unless ARGS name one: its first check of a slip is never a duplicate."""
    if "--reference" not in args:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        args = (*args, "--reference", "t-" + hashlib.sha256(test.encode()).hexdigest()[:16])
    return _run("verify", *args)


@pytest.mark.timeout(120)
def test_up_then_verify_every_printed_sample(network: UpNetwork) -> None:
    for qr in network.sample_qrs:
        result = _verify("--hub", network.hub, "--json", qr)

        assert 0 == result.returncode, result.stderr
        tx = json.loads(result.stdout)["transaction"]
        slip = miniqr.parse(qr)
        assert (slip.sending_bank, slip.trans_ref) == (tx["sendingBank"], tx["transRef"])
        assert int(tx["amount"]["satang"]) > 0  # proto3 JSON: an int64 is a string


@pytest.mark.timeout(120)
def test_verify_prints_a_table_and_exit_codes_tell_failures_apart(network: UpNetwork) -> None:
    qr = network.sample_qrs[0]
    slip = miniqr.parse(qr)

    table = _verify("--hub", network.hub, qr)
    by_ref = _verify("--hub", network.hub, "--bank", slip.sending_bank, "--ref", slip.trans_ref)
    bad_crc = _verify("--hub", network.hub, "--json", qr[:-1] + ("0" if qr[-1] != "0" else "1"))
    unknown = _verify("--hub", network.hub, "--bank", "014", "--ref", "NOSUCHREF123")
    not_member = _verify("--hub", network.hub, "--bank", "071", "--ref", "ABC123")

    assert (0, 6, 2, 3, 3) == (  # the second check of one slip is a duplicate
        table.returncode,
        by_ref.returncode,
        bad_crc.returncode,
        unknown.returncode,
        not_member.returncode,
    )
    assert slip.trans_ref in table.stdout
    assert slip.trans_ref in by_ref.stdout
    error = json.loads(bad_crc.stdout)  # Connect error JSON, as the JSON API answers
    (info,) = [d["debug"] for d in error["details"] if d["type"] == "google.rpc.ErrorInfo"]
    assert ("invalid_argument", "INVALID_SLIP_QR", "91", "6400") == (
        error["code"],
        info["reason"],
        info["metadata"]["field"],
        info["metadata"]["code"],
    )
    assert "SLIP_NOT_FOUND" in unknown.stderr
    assert "ISSUER_NOT_FOUND" in not_member.stderr


@pytest.mark.parametrize(
    ("command", "exit_code", "server", "start"),
    [
        (("verify", "--timeout", "2", "--bank", "014", "--ref", "ABC"), 4, "hub", "txverify up"),
        (("members", "list"), 1, "hub", "txverify up"),
        (("audit",), 1, "hub", "txverify up"),
        (("faults", "014", "--hang"), 1, "simulator control API", "txverify banks"),
        (("load", "--member", "002", "--duration", "1"), 4, "simulator control API", "txverify up"),
    ],
)
def test_a_command_with_no_server_there_says_so_in_one_line(
    command: tuple[str, ...], exit_code: int, server: str, start: str
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused.
    flag = "--control" if server != "hub" else "--hub"
    extra = ("--hub", "127.0.0.1:1") if command[0] == "load" else ()
    result = _run(*command, flag, "127.0.0.1:1", *extra)

    assert exit_code == result.returncode, result.stderr
    assert [f"no {server} answers at 127.0.0.1:1 (connection refused): "] == [
        line[: len(f"no {server} answers at 127.0.0.1:1 (connection refused): ")]
        for line in result.stderr.splitlines()
    ]
    assert start in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("verify", "--member", "002", miniqr.build("014", "20261127014ABCDEFGHIJ")),
        ("members", "list"),
        ("audit",),
    ],
)
def test_commands_refuse_a_hub_presenting_a_member_certificate(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # Member 014's certificate as `certs init` issued it before M10 (valid for 127.0.0.1):
    # only the hub's name, which no member certificate carries, may pass.
    pki = tls.init_dev_pki(tmp_path / "certs", ["002", "014"])
    with impostor_hub(loopback_member_pki(pki, "014", tmp_path / "old"), "014") as fake:
        target = ("--hub", f"127.0.0.1:{fake.port}", "--certs", str(pki.directory))
        result = _run(*command, *target)

    assert [] == fake.calls
    assert result.returncode in (1, 4), result.stderr  # 4: verify's UNAVAILABLE
    assert "UNAVAILABLE" in result.stderr
    assert tls.HUB_DNS in result.stderr
    assert "VALID" not in result.stdout


def test_verify_without_a_slip_is_a_usage_error() -> None:
    result = _verify()

    assert 2 == result.returncode
    assert "--bank" in result.stderr


@pytest.mark.parametrize(
    ("command", "remedy"),
    [
        (
            ("banks", "--codes", "014", "--transactions", "5"),
            "use --tls (txverify up) or --certs DIR (txverify banks) to serve other hosts",
        ),
        (
            (
                "up",
                "--port",
                "0",
                "--console",
                "-1",
                "--json-port",
                "-1",
                "--banks",
                "014",
                "--transactions",
                "5",
            ),
            "use --tls to serve other hosts",
        ),
    ],
)
def test_banks_without_tls_refuse_a_non_loopback_host(
    command: tuple[str, ...], remedy: str
) -> None:
    # Nothing may listen: the refusal comes before any port is bound (a bound port
    # would keep these commands running until the timeout).
    result = subprocess.run(
        _cli(*command, "--host", "0.0.0.0"), capture_output=True, text=True, timeout=20
    )

    said = " ".join(result.stderr.split())
    assert 2 == result.returncode, result.stderr
    assert f"loopback only, not '0.0.0.0': {remedy}" in said
    assert "Traceback" not in result.stderr
    assert "TXVERIFY-READY" not in result.stdout


@pytest.mark.timeout(120)
def test_up_stops_cleanly_on_ctrl_c(own_network: UpNetwork) -> None:
    network = own_network
    network.proc.send_signal(signal.SIGINT)

    assert 0 == network.proc.wait(timeout=20)
    unreachable = _verify("--hub", network.hub, "--timeout", "2", network.sample_qrs[0])
    assert 4 == unreachable.returncode


@pytest.mark.timeout(120)
def test_slip_makes_a_transfer_whose_png_and_qr_verify(network: UpNetwork, tmp_path: Path) -> None:
    from txverify.slipimage import decode_qr_texts

    png = tmp_path / "slip.png"
    made = _run(
        "slip", "--from-bank", "004", "--to", "0812345678", "--amount", "150.00",
        "--png", str(png), "--json",
    )  # fmt: skip

    assert 0 == made.returncode, made.stderr
    slip = json.loads(made.stdout)
    assert [slip["qrText"]] == decode_qr_texts(png)
    verified = _verify("--hub", network.hub, "--json", slip["qrText"])
    assert 0 == verified.returncode, verified.stderr
    tx = json.loads(verified.stdout)["transaction"]
    assert ("15000", "004", "xxx-xxx-5678") == (
        tx["amount"]["satang"],
        tx["sendingBank"],
        tx["receiver"]["proxy"]["value"],
    )


def test_slip_with_a_bad_amount_is_a_usage_error(network: UpNetwork) -> None:
    result = _run("slip", "--from-bank", "004", "--to", "0812345678", "--amount", "1.234")

    assert 2 == result.returncode
    assert "not an amount" in result.stderr


@pytest.mark.timeout(120)
def test_faults_refuse_makes_verify_unavailable_until_cleared(network: UpNetwork) -> None:
    qr = next(q for q in network.sample_qrs if miniqr.parse(q).sending_bank == "014")  # SCB

    refused = _run("faults", "014", "--refuse")
    try:
        down = _verify("--hub", network.hub, qr)
    finally:
        cleared = _run("faults", "014", "--clear")
    deadline = time.monotonic() + 15
    up = _verify("--hub", network.hub, qr)
    while up.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.3)
        up = _verify("--hub", network.hub, qr)

    assert (0, 4, 0, 0) == (refused.returncode, down.returncode, cleared.returncode, up.returncode)
    assert "NO (refusing)" in refused.stdout


@pytest.mark.timeout(120)
def test_slips_export_writes_the_asked_mix(network: UpNetwork) -> None:
    result = _run(
        "slips", "export", "--count", "12", "--not-found", "2", "--malformed", "2",
        "--expired", "1", "--unknown-issuer", "1", "--kinds",
    )  # fmt: skip

    assert 0 == result.returncode, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    kinds = [kind for kind, _ in rows]
    assert {"valid": 12, "notfound": 2, "malformed": 2, "expired": 1, "unknownissuer": 1} == {
        k: kinds.count(k) for k in set(kinds)
    }
    valid_banks = {miniqr.parse(qr).sending_bank for kind, qr in rows if kind == "valid"}
    assert MEMBERS == len(valid_banks)
    expected_exit = {"valid": 0, "notfound": 3, "malformed": 2, "expired": 3, "unknownissuer": 3}
    for kind in expected_exit:
        qr = next(q for k, q in rows if k == kind)
        assert expected_exit[kind] == _verify("--hub", network.hub, qr).returncode, kind


def test_commands_without_a_network_say_how_to_start_one() -> None:
    result = _run("faults", "014")

    assert 1 == result.returncode
    assert "txverify up" in result.stderr


@pytest.mark.timeout(120)
def test_members_commands_suspend_and_resume_a_member(network: UpNetwork) -> None:
    qr = network.sample_qrs[3]

    listed = _run("members", "list", "--json")
    suspended = _run("members", "suspend", "002", "--reason", "audit")
    try:
        refused = _verify(qr)  # the CLI speaks for member 002, as `txverify up` recorded
    finally:
        resumed = _run("members", "resume", "002")
    answered = _verify(qr)
    shown = _run("members", "show", "002", "--json")

    assert 0 == listed.returncode, listed.stderr
    assert ["002", "004", "006", "011", "014", "025", "030", "069", "900"] == [
        m["code"] for m in json.loads(listed.stdout)["members"]
    ]
    assert (0, 1, 0, 0) == (
        suspended.returncode,
        refused.returncode,
        resumed.returncode,
        answered.returncode,
    )
    assert "MEMBER_SUSPENDED" in refused.stderr
    history = json.loads(shown.stdout)["history"]
    assert ["REGISTER", "STATUS", "STATUS"] == [h["action"] for h in history]
    assert "audit" in history[1]["details"]


@pytest.mark.timeout(120)
def test_up_with_tls_verifies_with_the_recorded_certificates(tmp_path: Path) -> None:
    """Under mTLS the CLI and the console both call with certificates: the console acts
    with the operator's (suspend, faults) and the member's (verify) from the hub's
    directory; `slip` and `faults` reach the simulator's control API as the operator,
    which refuses a plaintext caller."""
    proc = subprocess.Popen(
        _cli("up", "--port", "0", "--console", "0", "--json-port", "0", "--transactions", "50",
             "--tls", "--banks", "002,014"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    qrs: list[str] = []
    console: dict[str, str] = {}
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while len(qrs) < 2 and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            # As this command was started: `python -m txverify.cli verify QR`.
            if match := re.search(r"-m txverify\.cli verify (\S+)", line):
                qrs.append(match.group(1))
            if match := re.search(r"console (at|operator token:) (\S+)", line):
                console[match.group(1)] = match.group(2)
        assert 2 == len(qrs)

        verified = _verify("--json", qrs[1])
        members = _run("members", "list", "--json")
        # The simulator's control API, over mTLS too, as the operator.
        slip = _run("slip", "--from-bank", "014", "--to", "0812345678", "--amount", "15.00",
                    "--json")  # fmt: skip
        made = json.loads(slip.stdout) if 0 == slip.returncode else {"qrText": "(no slip)"}
        slip_verified = _verify("--json", made["qrText"])
        faults = _run("faults", "002", "--latency-ms", "1")
        plaintext = _plaintext_list_banks(_recorded()["control"])
        by_console = _console_post(console, "/api/verify", {"member": "014", "qr_text": qrs[0]})
        console_faults = _console_post(console, "/api/banks/014/faults", {"latency_ms": 2})
        suspended = _console_post(console, "/api/members/002/status", {"status": "SUSPENDED"})
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()

    assert 0 == verified.returncode, verified.stderr
    assert miniqr.parse(qrs[1]).trans_ref == json.loads(verified.stdout)["transaction"]["transRef"]
    assert 0 == members.returncode, members.stderr
    assert 0 == slip.returncode, slip.stderr
    assert 0 == slip_verified.returncode, slip_verified.stderr
    assert 0 == faults.returncode, faults.stderr
    assert "1 ms" in faults.stdout
    assert "UNAVAILABLE" == plaintext
    assert (True, "VERDICT_VALID") == (by_console["ok"], by_console["answer"]["verdict"])
    assert (2, True) == (console_faults["faults"]["latency_ms"], console_faults["issuer_listening"])
    assert "SUSPENDED" == suspended["member"]["status"]


def _plaintext_list_banks(control: str) -> str:
    """The status of a plaintext ListBanks call to the simulator's control API."""
    with grpc.insecure_channel(control) as channel:
        try:
            simulator_pb2_grpc.BankSimulatorStub(channel).ListBanks(
                simulator_pb2.ListBanksRequest(), timeout=5
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


def _recorded() -> dict[str, Any]:
    """The network `txverify up` recorded (TXVERIFY_NETWORK, set for each test)."""
    recorded: dict[str, Any] = json.loads(Path(os.environ["TXVERIFY_NETWORK"]).read_text())
    return recorded


def _console_post(console: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    """POST to the console as the operator: a form for /api/verify, JSON otherwise."""
    if path == "/api/verify":
        data, kind = urllib.parse.urlencode(body).encode(), "application/x-www-form-urlencoded"
    else:
        data, kind = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(
        console["at"].rstrip("/") + path,
        data=data,
        headers={"Content-Type": kind, "X-Console-Token": console["operator token:"]},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


@pytest.mark.timeout(120)
def test_verify_with_expectations_reports_checks_and_verdict(network: UpNetwork) -> None:
    qr = network.sample_qrs[1]
    first = json.loads(_verify("--hub", network.hub, "--json", "--reference", "till-1", qr).stdout)
    amount = units.format_baht(int(first["transaction"]["amount"]["satang"])).replace(",", "")

    ok = _verify("--hub", network.hub, "--json", "--amount", amount, "--reference", "till-2", qr)
    wrong = _verify("--hub", network.hub, "--json", "--amount-at-least", "999999", qr)
    bad = _verify("--hub", network.hub, "--amount", "12.345", qr)

    assert (0, 5, 2) == (ok.returncode, wrong.returncode, bad.returncode)
    assert "VERDICT_VALID" == json.loads(ok.stdout)["verdict"]
    checks = json.loads(wrong.stdout)["checks"]
    assert ("CHECK_AMOUNT", "CHECK_OUTCOME_FAIL") == (checks[0]["check"], checks[0]["outcome"])


@pytest.mark.timeout(120)
def test_audit_lists_the_verifications(network: UpNetwork) -> None:
    qr = network.sample_qrs[0]
    _verify("--hub", network.hub, "--request-id", "audit-me-1", qr)

    result = _run("audit", "--request-id", "audit-me-1", "--json")

    assert 0 == result.returncode, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("audit-me-1", "OK", "VERDICT_VALID")] == [
        (r["requestId"], r["status"], r["verdict"]) for r in rows
    ]


@pytest.mark.timeout(120)
def test_verify_reads_the_slip_qr_from_an_image(network: UpNetwork, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "slip.png"
    made = _run(
        "slip", "--from-bank", "014", "--to", "0812345678", "--amount", "9.50", "--png", str(png)
    )
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    payment = tmp_path / "payment.png"
    body = "00020101021129370016A000000677010111011300668123456785802TH53037646304"
    import segno

    segno.make(body + f"{miniqr.crc16_ccitt_false(body.encode()):04X}", error="m").save(
        str(payment), scale=6
    )

    verified = _verify("--hub", network.hub, "--json", "--image", str(png))
    no_qr = _verify("--hub", network.hub, "--image", str(blank))
    not_slip = _verify("--hub", network.hub, "--image", str(payment))
    missing = _verify("--hub", network.hub, "--image", str(tmp_path / "nope.png"))

    assert 0 == made.returncode, made.stderr
    assert 0 == verified.returncode, verified.stderr
    assert "950" == json.loads(verified.stdout)["transaction"]["amount"]["satang"]
    assert (2, 2, 2) == (no_qr.returncode, not_slip.returncode, missing.returncode)
    assert "no QR code" in no_qr.stderr  # the hub read the image (SLIP_IMAGE_NO_QR)
    assert "SLIP_IMAGE_NOT_A_SLIP" in not_slip.stderr
    assert "cannot read the slip image" in missing.stderr


@pytest.mark.timeout(120)
def test_up_stops_its_children_on_sigterm(own_network: UpNetwork) -> None:
    network = own_network
    recorded = json.loads(network.record.read_text())
    hub_port = int(network.hub.rsplit(":", 1)[1])
    control_port = int(recorded["control"].rsplit(":", 1)[1])

    network.proc.send_signal(signal.SIGTERM)

    assert 0 == network.proc.wait(timeout=20)
    for port in (hub_port, control_port):  # both child processes closed their ports
        with socket.socket() as probe:
            assert 0 != probe.connect_ex(("127.0.0.1", port)), port


# --- conventions -----------------------------------------------------------------------


def test_version_and_short_help_work_on_every_level() -> None:
    from importlib.metadata import version

    shown = _run("--version")
    helps = [_run(*command, "-h") for command in ((), ("verify",), ("members", "list"))]

    assert (0, f"txverify {version('txverify')}\n") == (shown.returncode, shown.stdout)
    assert [0, 0, 0] == [h.returncode for h in helps]
    assert all("Usage: txverify" in h.stdout for h in helps)


def test_help_shows_flags_without_a_value_type() -> None:
    shown = _run("verify", "--help").stdout

    flags = [line for line in shown.splitlines() if "--json" in line or "--help" in line]
    assert 2 == len(flags), shown
    assert not any("<bool>" in line for line in flags), flags
    assert any("<str>" in line for line in shown.splitlines() if "--hub" in line), shown


def test_shell_completion_can_be_installed() -> None:
    shown = _run("--show-completion", "bash")

    assert 0 == shown.returncode, shown.stderr
    assert "complete" in shown.stdout
    assert "txverify" in shown.stdout


def test_a_closed_stdout_pipe_keeps_the_documented_exit_code(network: UpNetwork) -> None:
    # `txverify verify ... | head -0`: the reader is gone before the table is written.
    reader_gone = subprocess.Popen(
        _cli("verify", "--hub", network.hub, "--reference", "closed-pipe", network.sample_qrs[0]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert reader_gone.stdout is not None
    assert reader_gone.stderr is not None
    reader_gone.stdout.close()
    with reader_gone.stderr:
        stderr = reader_gone.stderr.read()

    assert 0 == reader_gone.wait(30), stderr  # VALID, as with an open pipe
    assert "BrokenPipe" not in stderr


def test_up_on_a_port_in_use_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            "up",
            "--port",
            str(port),
            "--console",
            "-1",
            "--json-port",
            "-1",
            "--transactions",
            "10",
        )

    assert 1 == result.returncode
    assert [
        f"up: in use: --port {port} (127.0.0.1): stop what listens there (another "
        "`txverify up`?), or pass --port 0 --console 0 --json-port 0 for free ports"
    ] == result.stderr.splitlines()


def test_banks_take_their_settings_from_txverify_banks_variables() -> None:
    env = {**os.environ, "TXVERIFY_BANKS_CODES": "014", "TXVERIFY_BANKS_TRANSACTIONS": "3",
           "TXVERIFY_BANKS_LOG_LEVEL": "WARNING"}  # fmt: skip
    banks = subprocess.Popen(
        _cli("banks"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert banks.stdout is not None
        ready = json.loads(banks.stdout.readline().removeprefix("TXVERIFY-READY "))
    finally:
        stop_process(banks, signal.SIGINT)

    assert ["014"] == [b["code"] for b in ready["banks"]]
