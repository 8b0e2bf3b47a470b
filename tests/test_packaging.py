"""The wheel an integrator installs: one top-level package, its data, and a client that
works from it alone (not from this checkout)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from txverify import miniqr
from txverify.cli import _EXTRAS_MODULES
from txverify.hub.app import RunningHub
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.ledger import LedgerTransaction, TxStatus
from txverify.simulators.server import RunningSimulator

# slow: real processes or long runs; `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = _EXTRAS_MODULES
_NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
               ".hypothesis", "node_modules", "txverify-data")  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools builds in the tree (build/), and what a build
    # of an earlier tree left there would go into this wheel too.
    tree = tmp_path_factory.mktemp("tree") / "txverify"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--wheel-dir", str(out), str(tree)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (built,) = out.glob("txverify-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a directory of its own (no dependencies: the venv's)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return target


def test_the_wheel_installs_txverify_as_its_only_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    assert {"txverify"} == {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert {
        "txverify/v1/verification.proto",
        "txverify/v1/verification_pb2.pyi",
        "txverify/v1/py.typed",
        "txverify/client/py.typed",
        "txverify/hub/console/static/index.html",
        "txverify/wire.py",
        "txverify/cli/__main__.py",
    } <= set(names)
    assert not any(n.endswith("txverify/__init__.py") for n in names)  # a PEP 420 namespace


def test_the_wheel_holds_every_module_and_data_file_of_the_source_roots(wheel: Path) -> None:
    # A subpackage left out of pyproject's list would be missing from the wheel only.
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        path.relative_to(ROOT / folder).as_posix()
        for folder in ("proto", "runtime", "server", "simulators", "clients")
        for path in (ROOT / folder / "txverify").rglob("*")
        if path.suffix in (".py", ".proto", ".json") and "__pycache__" not in path.parts
    }

    assert len(sources) > 100
    assert "txverify/v1/openapi.json" in sources  # what the JSON API serves
    assert set() == sources - names


def _requirements(wheel: Path) -> list[str]:
    names = zipfile.ZipFile(wheel).namelist()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def test_the_base_install_is_the_contract_and_the_client_library(wheel: Path) -> None:
    base = sorted(
        re.split(r"[\s<>=!~;\[]", r)[0] for r in _requirements(wheel) if "extra ==" not in r
    )

    assert ["cryptography", "grpcio", "grpcio-status", "protobuf"] == base


def test_the_command_without_its_extra_says_what_to_install(installed: Path) -> None:
    blocker = (
        "import sys\n"
        f"sys.path[:0] = [{str(installed)!r}, {sysconfig.get_path('purelib')!r}, "
        f"{sysconfig.get_path('platlib')!r}]\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'typer':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Missing())\n"
        "from txverify.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", blocker], capture_output=True, text=True, timeout=60
    )

    assert 1 == done.returncode
    assert (
        "txverify: the command needs its extra dependencies (typer is not installed): "
        "pip install 'txverify[cli]'\n"
    ) == done.stderr


def _seeded(sim: RunningSimulator, code: str) -> LedgerTransaction:
    bank = sim.nodes[code].bank
    for slip in bank.list_slips(100, None):
        tx = slip.transaction
        if bank.visibility(tx) is SlipVisibility.VISIBLE and tx.status is TxStatus.COMPLETED:
            return tx
    raise AssertionError(f"no visible seeded slip at {code}")


async def test_the_installed_client_library_verifies_a_slip(
    installed: Path, hub: RunningHub, simulator: RunningSimulator
) -> None:
    target = installed
    raw = _seeded(simulator, "014")
    # -S: no site, so no .pth and none of this checkout's editable install; the
    # dependencies from the venv's site-packages, the project from the wheel only.
    script = (
        "import sys\n"
        f"sys.path[:0] = [{str(target)!r}, {sysconfig.get_path('purelib')!r}, "
        f"{sysconfig.get_path('platlib')!r}]\n"
        # grpc imports grpc_health and grpc_reflection itself when they are there.
        "import grpc\n"
        "before = set(sys.modules)\n"
        "import txverify, txverify.client as c\n"
        f"assert all(p.startswith({str(target)!r}) for p in txverify.__path__), txverify.__path__\n"
        f"with c.TxVerifyClient('127.0.0.1:{hub.port}', member='002') as client:\n"
        f"    r = client.verify(c.SlipQuery(qr_text={miniqr.build('014', raw.trans_ref)!r}))\n"
        "print(r.transaction.trans_ref, c.__file__)\n"
        # The base install suffices: nothing of an extra was imported on the way.
        f"extras = sorted(m for m in set(sys.modules) - before\n"
        f"                if m.partition('.')[0] in {sorted(EXTRAS)!r})\n"
        "assert not extras, extras\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-S", "-c", script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)

    assert 0 == process.returncode, err.decode()
    ref, where = out.decode().split()
    assert raw.trans_ref == ref
    assert where.startswith(str(target))
