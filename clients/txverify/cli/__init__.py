"""The `txverify` command (typer): the network, the hub, the banks, verify, load, scenarios.

Its dependencies are the `cli` extra (`pip install 'txverify[cli]'`); the base
install is the contract and the client library only, so `main` says what to
install instead of failing with a traceback.
"""

from __future__ import annotations

import sys

# Top-level modules of the extras' distributions (pyproject.toml).
_EXTRAS_MODULES = frozenset({
    "typer", "rich", "yaml", "hdrh", "grpc_health", "grpc_reflection", "sqlite_utils",
    "prometheus_client", "uvloop", "psycopg", "psycopg_pool", "redis", "aiohttp",
    "PIL", "segno", "zxingcpp",
})  # fmt: skip


def main() -> None:
    """Entry point of the `txverify` script."""
    try:
        from txverify.cli.cli import main as run
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] not in _EXTRAS_MODULES:
            raise
        sys.exit(
            f"txverify: the command needs its extra dependencies ({missing.name} is not "
            "installed): pip install 'txverify[cli]'"
        )
    run()
