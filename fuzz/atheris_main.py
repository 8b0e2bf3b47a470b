"""Run one fuzz target under atheris: `python fuzz/atheris_main.py TARGET [libFuzzer args]`.

The only module that imports atheris, so that the targets themselves run without
it (tests/test_fuzz_targets.py). It instruments the project's code for coverage
as the target imports it, then hands the process to libFuzzer, which reads the
corpus directories, mutates, and exits on the first crash with an artifact file.
Given files instead of directories, libFuzzer runs just those inputs (a replay).
"""

from __future__ import annotations

import importlib
import sys

# Coverage is followed in these packages (and in the target and its helpers).
INSTRUMENTED = ("txverify", "server", "simulators", "offline_hub")


def main() -> None:
    import atheris

    if len(sys.argv) < 2:
        raise SystemExit("usage: atheris_main.py TARGET [libFuzzer args]")
    name = f"{sys.argv[1]}_target"
    with atheris.instrument_imports(include=[*INSTRUMENTED, name]):
        target = importlib.import_module(name)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target.TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
