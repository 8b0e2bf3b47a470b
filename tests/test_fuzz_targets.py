"""The fuzz targets of fuzz/ hold over their seeds and hypothesis' bytes, without atheris.

`make fuzz` runs the targets coverage-guided under atheris (fuzz/run.py); here
each runs a few hundred inputs in the regular suite, so that the targets cannot
rot and what they check is checked on every `make test`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txverify.hub.checks import validate_expectations
from txverify.v1 import verification_pb2

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ("qr", "verify", "issuer", "identity", "answer", "registry", "audit")
EXAMPLES = 200


def fuzz_module(name: str) -> ModuleType:
    """A module of fuzz/, whose files import each other as top-level modules (like bench/)."""
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(name)


def target(name: str) -> Callable[[bytes], None]:
    test_one_input: Callable[[bytes], None] = fuzz_module(f"{name}_target").TestOneInput
    return test_one_input


def seeds(name: str) -> list[bytes]:
    found: list[bytes] = fuzz_module("seed_corpus").seeds(name)
    return found


@pytest.fixture(scope="module", autouse=True)
def offline_network() -> Iterator[None]:
    """The targets share one in-process network; closed once this module is done."""
    yield
    fuzz_module("offline_hub").close_network()


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A seed with a few bytes changed, inserted or dropped."""
    data = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        byte = draw(st.integers(min_value=0, max_value=255))
        how = draw(st.sampled_from(("change", "insert", "drop")))
        if how == "insert" or at == len(data):
            data.insert(at, byte)
        elif how == "change":
            data[at] = byte
        else:
            del data[at]
    return bytes(data)


def test_every_target_is_tested_here() -> None:
    assert TARGETS == fuzz_module("seed_corpus").TARGETS


@pytest.mark.parametrize("name", TARGETS)
def test_target_holds_for_its_seeds(name: str) -> None:
    run = target(name)

    for data in seeds(name):
        run(data)


@pytest.mark.parametrize("name", TARGETS)
def test_target_holds_for_any_bytes(name: str) -> None:
    run = target(name)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.binary(max_size=1000) | mutated(name))
    def one(data: bytes) -> None:
        run(data)

    one()


def test_verify_seeds_reach_the_issuers_answer() -> None:
    verify = fuzz_module("verify_target")
    codes = set()

    for data in seeds("verify"):
        request = verification_pb2.VerifyRequest.FromString(data[1:])
        codes.add(verify.check_verify(data, request).code)

    # Not only refusals: the seeds get answers, so mutations start deep in the hub.
    assert {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND} <= codes


@pytest.mark.parametrize(("name", "rpcs"), [("registry", 7), ("audit", 1)])
def test_registry_and_audit_seeds_get_answers_of_every_rpc(name: str, rpcs: int) -> None:
    counts = fuzz_module(f"{name}_target").COUNTS.counts
    counts.clear()

    for data in seeds(name):
        target(name)(data)

    # Each RPC is answered OK by some seed, so mutations start past the refusals.
    assert rpcs == len(counts)
    assert all(by_status.get("OK") for by_status in counts.values()), counts


def test_a_counting_target_writes_its_counts_for_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = fuzz_module("rpc_checks")
    monkeypatch.setenv(checks.COUNTS_ENV, str(tmp_path / "counts.json"))
    counts = checks.RpcCounts()

    counts.add("GetMember", grpc.StatusCode.OK)

    assert {"GetMember": {"OK": 1}} == checks.read_counts(tmp_path / "counts.json")


def test_answer_target_expectations_are_all_valid() -> None:
    for expect in fuzz_module("answer_target").EXPECTATIONS:
        validate_expectations(expect)


def test_replay_runs_saved_inputs_without_atheris(tmp_path: Path) -> None:
    saved = tmp_path / "input"
    saved.write_bytes(seeds("qr")[0])

    assert 0 == fuzz_module("run").replay("qr", [saved])
