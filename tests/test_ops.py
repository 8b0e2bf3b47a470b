"""The alerting rules and the dashboard in ops/: promtool accepts and unit-tests the rules,
the dashboard loads with a query and a title per panel, every txverify_ series they name is
one a running hub exports, and every alert has its section in OPERATIONS.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import member_channel
from txverify.errors import Reason
from txverify.hub.app import RunningHub
from txverify.simulators.server import RunningSimulator
from txverify.v1 import common_pb2, verification_pb2, verification_pb2_grpc

HubFactory = Callable[..., Awaitable[RunningHub]]

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "ops" / "prometheus"
RULES = PROMETHEUS / "txverify-rules.yml"
RULE_TESTS = PROMETHEUS / "txverify-rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.example.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "txverify-dashboard.json"
OPERATIONS = ROOT / "OPERATIONS.md"

# A txverify_ series and its label matchers, if any, as PromQL writes them (crudely).
SELECTOR = re.compile(r"\b(txverify_[a-z_]+)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
# Labels Prometheus adds to every scraped series (the target's), not the hub.
TARGET_LABELS = {"instance", "job"}
# Grafana's variables, as a query sent to Prometheus would have them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*", "$issuer": ".*", "$member": ".*"}


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool (Debian package prometheus), or the test is skipped saying why there is none."""
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        why = (
            "promtool not found: install Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus) to check ops/prometheus/"
        )
        if os.environ.get("TXVERIFY_REQUIRE_PROMTOOL"):  # CI: a skip would hide the checks
            pytest.fail(why)
        pytest.skip(why)
    return found


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=30, check=False
    )


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel but rows, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _dashboard_queries() -> list[str]:
    """Each panel query, and each variable's query, with Grafana's variables filled in."""
    dashboard = _dashboard()
    queries = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    queries += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    filled = []
    for query in queries:
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        filled.append(query)
    return filled


def _test_series() -> list[str]:
    """The synthetic series of the rules' unit tests."""
    loaded = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    return [s["series"] for test in loaded["tests"] for s in test["input_series"]]


def _promql() -> dict[str, list[str]]:
    """Where each piece of PromQL (or series notation) naming txverify_ series comes from."""
    return {
        str(RULES.relative_to(ROOT)): [rule["expr"] for rule in _rules()],
        str(RULE_TESTS.relative_to(ROOT)): _test_series(),
        str(DASHBOARD.relative_to(ROOT)): _dashboard_queries(),
    }


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, - for spaces."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


# --- (a) promtool ------------------------------------------------------------------------


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(RULES))

    assert 0 == result.returncode, result.stdout + result.stderr


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", str(RULE_TESTS))

    assert 0 == result.returncode, result.stdout + result.stderr


def test_promtool_accepts_the_example_configuration(promtool: str) -> None:
    result = _promtool(promtool, "check", "config", str(CONFIG))

    assert 0 == result.returncode, result.stdout + result.stderr


def test_the_dashboards_queries_are_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses a rule file's expressions: each panel query becomes a recording rule.
    queries = [q for q in _dashboard_queries() if not q.startswith("label_values(")]
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = _promtool(promtool, "check", "rules", str(path))

    assert 0 == result.returncode, result.stdout + result.stderr


# --- the rules' shape ----------------------------------------------------------------------


def test_every_alert_has_a_severity_and_the_annotations_on_call_reads() -> None:
    lacking = [
        alert["alert"]
        for alert in _alerts()
        if alert.get("labels", {}).get("severity") not in {"critical", "warning"}
        or not {"summary", "description", "runbook_url"} <= set(alert.get("annotations", {}))
    ]

    assert [] == lacking


def test_every_runbook_url_is_a_section_of_operations_md() -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    missing = [
        url
        for url in (alert["annotations"]["runbook_url"] for alert in _alerts())
        if not url.startswith("OPERATIONS.md#") or url.split("#", 1)[1] not in anchors
    ]

    assert [] == missing


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    loaded = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    cases = [case for test in loaded["tests"] for case in test["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    names = {alert["alert"] for alert in _alerts()}

    assert (set(), set()) == (names - fired, names - silent)


def test_reasons_and_statuses_named_are_the_hubs() -> None:
    reasons = {r.value for r in Reason} | {""}
    statuses = {code.name for code in grpc.StatusCode}
    unknown = []
    for where, pieces in _promql().items():
        for piece in pieces:
            for label, _, value in MATCHER.findall(piece):
                known = {"reason": reasons, "status": statuses}.get(label)
                if known is not None:
                    unknown += [f"{where}: {label}={v}" for v in value.split("|") if v not in known]

    assert [] == unknown


# --- (c) the dashboard ---------------------------------------------------------------------


def test_the_dashboard_loads_with_a_prometheus_datasource_variable() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    assert dashboard["schemaVersion"] >= 36
    assert ("datasource", "prometheus") == (
        variables["datasource"]["type"],
        variables["datasource"]["query"],
    )


def test_every_panel_has_a_title_and_a_query_on_the_datasource_variable() -> None:
    panels = list(_panels(_dashboard()))
    lacking = [
        panel.get("title") or f"panel {panel.get('id')}"
        for panel in panels
        if not panel.get("title")
        or not panel.get("targets")
        or not all(t.get("expr", "").strip() for t in panel["targets"])
        or {panel["datasource"]["uid"], *(t["datasource"]["uid"] for t in panel["targets"])}
        != {"${datasource}"}
    ]

    assert len(panels) > 10
    assert [] == lacking
    assert len(panels) == len({p["id"] for p in panels})


# --- (b) the names against a running hub ---------------------------------------------------


async def _scrape(port: int) -> str:
    def read() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body: bytes = response.read()
        return body.decode()

    return await asyncio.to_thread(read)


async def _verify_some(hub: RunningHub, simulator: RunningSimulator) -> None:
    """A few answered verifications at 014, and failures: a bad QR, a slip not found, an
    unknown member."""
    requests = [
        verification_pb2.VerifyRequest(qr_text=slip.qr_text)
        for slip in simulator.nodes["014"].bank.list_slips(3, None)
    ]
    requests += [
        verification_pb2.VerifyRequest(qr_text="not a slip"),
        verification_pb2.VerifyRequest(
            slip_ref=common_pb2.SlipRef(sending_bank="014", trans_ref="NOSUCHSLIP0001")
        ),
    ]
    for member, batch in (("002", requests), ("999", requests[:1])):
        async with member_channel(hub.port, member) as channel:
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            for request in batch:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.Verify(request, timeout=10)


async def test_every_series_named_is_one_the_hub_exports(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(metrics_port=0)
    await _verify_some(hub, simulator)

    body = await _scrape(hub.metrics.port)

    exported: dict[str, set[str]] = {}  # series name -> its label names
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    reasons = {
        sample.labels["reason"]
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "txverify_verify_total"
    }
    unknown, unlabelled = [], []
    for where, pieces in _promql().items():
        for piece in pieces:
            for name, matchers in SELECTOR.findall(piece):
                if name not in exported:
                    unknown.append(f"{where}: {name}")
                    continue
                labels = {label for label, _, _ in MATCHER.findall(matchers)}
                unlabelled += [
                    f"{where}: {name}{{{label}}}"
                    for label in sorted(labels - exported[name] - TARGET_LABELS)
                ]

    assert {"", "INVALID_SLIP_QR", "SLIP_NOT_FOUND", "UNKNOWN_MEMBER"} <= reasons
    assert [] == sorted(set(unknown))
    assert [] == sorted(set(unlabelled))
