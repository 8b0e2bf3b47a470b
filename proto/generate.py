"""Generate the Python code and type stubs of the txverify.v1 contract, and the
OpenAPI document of the hub's JSON API (openapi.py).

Run as `python proto/generate.py [--out DIR]` (what `make proto` does). The
output for `--out proto` is committed; tests/test_generated.py regenerates
into a temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

import openapi

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "txverify" / "v1"


def proto_files() -> list[Path]:
    """The contract's .proto files, in a stable order."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out: Path) -> None:
    """Write *_pb2.py, *_pb2_grpc.py and their .pyi stubs, and the Connect protocol's
    *_connect.py (servers and clients over google.protobuf messages), and openapi.json,
    under `out`."""
    bin_dir = Path(sys.executable).parent
    well_known = resources.files("grpc_tools") / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--plugin=protoc-gen-connectrpc={bin_dir / 'protoc-gen-connectrpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--connectrpc_out=protobuf=google:{out}",
        *(str(p.relative_to(ROOT)) for p in proto_files()),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    openapi.write(out / "txverify" / "v1" / "openapi.json", ROOT, proto_files())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: proto/)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
