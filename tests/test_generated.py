"""The contract's generated code is what `make proto` makes, and every RPC is implemented."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor

from txverify.hub.usage import UsageServicer
from txverify.hub.verification import VerificationServicer
from txverify.simulators.issuer import IssuerServicer
from txverify.v1 import issuer_pb2, usage_pb2, verification_pb2

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "proto" / "txverify" / "v1"


@pytest.mark.timeout(120)
def test_committed_generated_code_matches_make_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "txverify" / "v1"
    made = sorted(p.name for p in fresh.iterdir())
    committed = sorted(
        p.name
        for p in GENERATED.iterdir()
        if p.name.endswith(
            ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", "_connect.py", "openapi.json")
        )
    )

    assert made == committed, "run `make proto`: generated files differ in name"
    _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, made, shallow=False)
    assert ([], []) == (mismatch, errors), "run `make proto` and commit the result"


@pytest.mark.parametrize(
    ("service", "servicer"),
    [
        (verification_pb2.DESCRIPTOR.services_by_name["VerificationService"], VerificationServicer),
        (issuer_pb2.DESCRIPTOR.services_by_name["IssuerService"], IssuerServicer),
        (usage_pb2.DESCRIPTOR.services_by_name["UsageService"], UsageServicer),
    ],
)
def test_every_rpc_is_implemented_with_request_response_naming(
    service: descriptor.ServiceDescriptor, servicer: type
) -> None:
    for method in service.methods:
        assert f"{method.name}Request" == method.input_type.name
        assert f"{method.name}Response" == method.output_type.name
        assert method.name in vars(servicer), f"{servicer.__name__} lacks {method.name}"
