# The two commands a fresh machine needs: `make run` and `make test`.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# Stamps record which install the venv has; they are redone when pyproject changes.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP     := $(VENV)/.installed-dev
BENCH_STAMP   := $(VENV)/.installed-bench
# The PostgreSQL the bench's PostgreSQL hub uses (a fresh schema); "" leaves it out.
BENCH_POSTGRES ?= postgresql://127.0.0.1:5432/test
FUZZ_STAMP    := $(VENV)/.installed-fuzz
FUZZ_SECONDS  ?= 60

.PHONY: run test test-fast lint typecheck pytest proto clean bench bench-full bench-tools bench-bank bench-hub bench-images bench-growth \
	bench-faults bench-restarts bench-scaling soak fuzz browser screenshots

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "txverify needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	@touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	@touch $@ $(RUNTIME_STAMP)

## run: start the hub and five simulated banks in the foreground (Ctrl-C stops them)
run: $(RUNTIME_STAMP)
	$(BIN)/txverify up

## test: lint, type-check and run the test suite
test: lint typecheck pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP)
	$(BIN)/pytest

## test-fast: the developer's loop (< 2 minutes): lint, types, the tests not marked slow
test-fast: lint typecheck $(DEV_STAMP)
	$(BIN)/pytest -q -m "not slow"

## proto: regenerate the contract's generated code (Python, stubs, Connect, openapi.json; the Connect-Node example's), committed
proto: $(DEV_STAMP)
	$(PY) proto/generate.py
	@# The Connect-Node example's generated code too, once its npm ci has run.
	@if [ -x examples/json/connect-node/node_modules/.bin/protoc-gen-es ]; then \
	  sh examples/json/connect-node/generate.sh; fi

## browser: Debian's Chromium for the console's browser tests (as root, when missing)
browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "install Debian's chromium as root: apt-get install chromium chromium-driver"; fi

## screenshots: the console's main views, from its browser tests, into docs/
screenshots: $(DEV_STAMP) browser
	TXVERIFY_SCREENSHOTS=docs TXVERIFY_REQUIRE_CHROMIUM=1 $(BIN)/pytest -q tests/test_console_browser.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

$(BENCH_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev,bench]'
	@touch $@ $(DEV_STAMP) $(RUNTIME_STAMP)

## bench: the hub (every feature on), 2 workers and on PostgreSQL, against a bare pass-through yardstick: every M11 target (< 5 min)
bench: $(BENCH_STAMP)
	$(PY) bench/harness.py --seconds 5 --rounds 2 --json bench-results.json \
		--compare-workers 2 --postgres "$(BENCH_POSTGRES)"

## bench-full: longer rounds, 1 and 2 hub workers, a 1-million-verification soak, table growth
bench-full: $(BENCH_STAMP) bench-tools
	$(PY) bench/harness.py --seconds 15 --rounds 3 --json bench-full-results.json --soak 1000000
	$(PY) bench/harness.py --seconds 15 --rounds 3 --json bench-workers2-results.json --workers 2
	$(PY) bench/growth_bench.py --json bench-growth-results.json

## bench-tools: h2load (Debian package nghttp2-client), the second load source, when missing
bench-tools:
	@command -v h2load >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client; \
	  else echo "h2load missing: install nghttp2-client (the benchmarks run without it)"; fi; }

## bench-growth: audit/duplicate cost from an empty database to 5 M rows; issuer latency 1 K to 1 M ledger rows
bench-growth: $(BENCH_STAMP)
	$(PY) bench/growth_bench.py --json bench-growth-results.json

## bench-bank: a simulated bank's IssuerInquiry rate vs a bare grpc.aio yardstick (M2)
bench-bank: $(DEV_STAMP)
	$(PY) bench/bank_bench.py --seconds 5 --rounds 3

## bench-hub: the hub with audit/duplicates/idempotency on vs off (M4)
bench-hub: $(DEV_STAMP)
	$(PY) bench/hub_bench.py --seconds 5 --rounds 3 --rate 0 --concurrency 64

## bench-images: QR-text throughput while slip images are read as fast as the decoders allow (>= 0.8x; M14)
bench-images: $(DEV_STAMP) bench-tools
	$(PY) bench/image_mix.py --seconds 6 --rounds 5 --json bench-images-results.json

## bench-faults: the issuer fault matrix at full load (closed loop): healthy issuers' throughput and latency per fault
bench-faults: $(DEV_STAMP)
	$(PY) bench/fault_matrix.py --seconds 8 --healthy-concurrency 16 --json bench-faults-results.json

## bench-restarts: the banks SIGKILLed and restarted 10 times (8 s down) under load: each hub's first OK after 014 listens again
bench-restarts: $(DEV_STAMP)
	$(PY) bench/restart_recovery.py --restarts 10 --down 8 --json bench-restarts-results.json

## bench-scaling: hub replicas behind nginx on one PostgreSQL (1-4), and audit writes alone (1-8 writers): SCALING.md
bench-scaling: $(DEV_STAMP)
	$(PY) bench/scaling.py --json bench-scaling-results.json

## soak: 10 minutes at 70% of the hub's measured capacity; RSS, open descriptors, errors every 10 s -> soak-report.json
soak: $(DEV_STAMP)
	$(PY) bench/soak.py --seconds 600 --interval 10 --report soak-report.json

$(FUZZ_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,dev,fuzz]'
	@touch $@ $(DEV_STAMP) $(RUNTIME_STAMP)

## fuzz: coverage-guided fuzzing (atheris) of slip QR, Verify, identity, issuer, issuer answers, MemberRegistry and AuditLog, $(FUZZ_SECONDS) s each
fuzz: $(FUZZ_STAMP)
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)
