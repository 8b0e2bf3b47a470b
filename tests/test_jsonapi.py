"""The JSON API (Connect protocol) through real HTTP clients against a running hub."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from conftest import HubFactory, members_of
from txverify.client import AsyncTxVerifyClient, SlipQuery
from txverify.hub.app import RunningHub, start_hub
from txverify.hub.identity import IdentityMode
from txverify.hub.resilience.ratelimit import RateLimit
from txverify.hub.settings import HubSettings
from txverify.runtime import tls
from txverify.simulators.bank import SlipVisibility
from txverify.simulators.server import RunningSimulator, start_simulator
from txverify.simulators.settings import SimulatorSettings
from txverify.v1 import audit_pb2, audit_pb2_grpc, simulator_pb2, verification_pb2

VERIFY = "/txverify.v1.VerificationService/Verify"
JSON = {"content-type": "application/json"}
AS_002 = {**JSON, "x-member-id": "002"}
TIMEOUT = 10.0


def visible_qr(sim: RunningSimulator, code: str = "014") -> str:
    bank = sim.nodes[code].bank
    return next(
        s.qr_text
        for s in bank.list_slips(100, None)
        if bank.visibility(s.transaction) is SlipVisibility.VISIBLE
    )


@pytest.fixture
async def json_hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(json_port=0)


@pytest.fixture
async def api(json_hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    assert json_hub.json_api is not None
    base = f"http://127.0.0.1:{json_hub.json_api.port}"
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The Connect error JSON, with its details decoded from their bytes (not from "debug")."""
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    decoded: dict[str, Any] = {}
    for detail in body.get("details", []):
        value = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
        kind = detail["type"].rpartition(".")[2]
        message = getattr(error_details_pb2, kind).FromString(value)
        decoded[kind] = json_format.MessageToDict(message)
        assert detail["debug"] == decoded[kind]  # what curl shows is what the bytes say
    body["decoded"] = decoded
    return body


def reason_of(response: httpx.Response) -> tuple[int, str, str, str]:
    error = error_of(response)
    info = error["decoded"].get("ErrorInfo", {})
    return (
        response.status_code,
        error["code"],
        info.get("reason", ""),
        info.get("metadata", {}).get("code", ""),
    )


# --- answers ------------------------------------------------------------------------


async def test_a_slip_is_verified_as_proto3_json(
    api: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    response = await api.post(VERIFY, json={"qrText": visible_qr(simulator)}, headers=AS_002)

    assert 200 == response.status_code
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "VERDICT_VALID" == body["verdict"]
    assert "014" == body["transaction"]["sendingBank"]
    assert isinstance(body["transaction"]["amount"]["satang"], str)  # int64: a JSON string
    parsed = json_format.ParseDict(body, verification_pb2.VerifyResponse())
    assert parsed.transaction.amount.satang > 0


async def test_the_same_answer_comes_as_binary_protobuf(
    api: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    request = verification_pb2.VerifyRequest(qr_text=visible_qr(simulator), request_id="bin-1")

    response = await api.post(
        VERIFY,
        content=request.SerializeToString(),
        headers={"content-type": "application/proto", "x-member-id": "002"},
    )

    assert 200 == response.status_code
    assert response.headers["content-type"] == "application/proto"
    answer = verification_pb2.VerifyResponse.FromString(response.content)
    assert ("bin-1", verification_pb2.VERDICT_VALID) == (answer.request_id, answer.verdict)


async def test_http2_with_prior_knowledge_is_served(
    json_hub: RunningHub, simulator: RunningSimulator
) -> None:
    assert json_hub.json_api is not None
    base = f"http://127.0.0.1:{json_hub.json_api.port}"
    async with httpx.AsyncClient(base_url=base, http1=False, http2=True) as client:
        response = await client.post(VERIFY, json={"qrText": visible_qr(simulator)}, headers=AS_002)

    assert ("HTTP/2", 200) == (response.http_version, response.status_code)


async def test_a_json_verification_is_audited_and_replayed_like_a_grpc_one(
    api: httpx.AsyncClient, json_hub: RunningHub, simulator: RunningSimulator
) -> None:
    request = {"qrText": visible_qr(simulator), "requestId": "json-audit-1"}
    first = (await api.post(VERIFY, json=request, headers=AS_002)).json()
    again = (await api.post(VERIFY, json=request, headers=AS_002)).json()

    assert "replayed" not in first
    assert again["replayed"] is True
    async with grpc.aio.insecure_channel(f"127.0.0.1:{json_hub.port}") as channel:
        records = await audit_pb2_grpc.AuditLogStub(channel).QueryAudit(
            audit_pb2.QueryAuditRequest(request_id="json-audit-1"),
            metadata=(("x-member-id", "002"),),
            timeout=TIMEOUT,
        )
    assert [False, True] == sorted(r.replayed for r in records.records)


async def test_the_json_and_grpc_apis_share_one_rate_limit(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(json_port=0, rate_limit=RateLimit(rate=0.01, burst=2))
    assert hub.json_api is not None
    qr = visible_qr(simulator)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.json_api.port}") as client:
        async with AsyncTxVerifyClient(f"127.0.0.1:{hub.port}", member="002") as grpc_client:
            await grpc_client.verify(SlipQuery(qr_text=qr))  # one token of two, over gRPC
        assert 200 == (await client.post(VERIFY, json={"qrText": qr}, headers=AS_002)).status_code
        refused = await client.post(VERIFY, json={"qrText": qr}, headers=AS_002)

    assert (429, "resource_exhausted", "RATE_LIMITED", "") == reason_of(refused)
    retry = error_of(refused)["decoded"]["RetryInfo"]["retryDelay"]
    assert float(retry.rstrip("s")) > 1


async def test_the_operator_manages_members_over_json(api: httpx.AsyncClient) -> None:
    listed = await api.post(
        "/txverify.v1.MemberRegistry/ListMembers",
        json={},
        headers={**JSON, "x-member-id": "operator"},
    )
    refused = await api.post("/txverify.v1.MemberRegistry/ListMembers", json={}, headers=AS_002)

    assert 200 == listed.status_code
    assert {"002", "014", "900"} <= {m["code"] for m in listed.json()["members"]}
    assert (403, "permission_denied", "NOT_OPERATOR", "6403") == reason_of(refused)


async def test_the_index_and_openapi_document_are_served(api: httpx.AsyncClient) -> None:
    index = (await api.get("/")).json()
    document = (await api.get("/openapi.json")).json()

    assert "txverify.v1.VerificationService" in index["services"]
    assert document["openapi"].startswith("3.")


# --- failures: each a Connect error with the gRPC API's reason and code --------------


async def test_a_missing_identity_is_unauthenticated(
    api: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    response = await api.post(VERIFY, json={"qrText": visible_qr(simulator)}, headers=JSON)

    assert (401, "unauthenticated", "UNKNOWN_MEMBER", "6421") == reason_of(response)
    assert "x-member-id" in error_of(response)["message"]


async def test_a_caller_that_is_no_member_is_unauthenticated(
    api: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    headers = {**JSON, "x-member-id": "999"}
    response = await api.post(VERIFY, json={"qrText": visible_qr(simulator)}, headers=headers)

    assert (401, "unauthenticated", "UNKNOWN_MEMBER", "6421") == reason_of(response)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"qrText": "0041000600000101030140217hello5102TH91049999"}, "INVALID_SLIP_QR"),
        ({}, "INVALID_REQUEST"),  # no slip at all
        ({"qrText": "x", "requestId": "has spaces"}, "INVALID_REQUEST"),
    ],
)
async def test_a_bad_request_is_invalid_argument_with_its_reason(
    api: httpx.AsyncClient, body: dict[str, Any], reason: str
) -> None:
    response = await api.post(VERIFY, json=body, headers=AS_002)

    assert (400, "invalid_argument", reason, "6400") == reason_of(response)


async def test_a_slip_the_issuer_does_not_know_is_not_found(api: httpx.AsyncClient) -> None:
    body = {"slipRef": {"sendingBank": "014", "transRef": "NOSUCHREF0000001"}}
    response = await api.post(VERIFY, json=body, headers=AS_002)

    assert (404, "not_found", "SLIP_NOT_FOUND", "8404") == reason_of(response)


@pytest.mark.parametrize(
    "content",
    [
        b'{"qrText": ',  # cut short
        b"not json at all",
        b'{"qrtext": "misspelt"}',  # an unknown field
        b'{"qrText": 5}',  # a number for a string
        b'{"expect": {"amount": {"equalsSatang": "1.5"}}, "qrText": "x"}',  # not an int64
        b"[1, 2]",
        b'{"qrText": "\\ud800"}',  # a lone surrogate
        '{"qrText": "\u0e01"}'.encode("utf-16"),
        b'{"qrText": "x", "qrText": "y"}',
        b"{" * 5000 + b"}" * 5000,  # nested past any limit
    ],
)
async def test_bad_json_is_invalid_request_never_a_500(
    api: httpx.AsyncClient, content: bytes
) -> None:
    response = await api.post(VERIFY, content=content, headers=AS_002)

    assert (400, "invalid_argument", "INVALID_REQUEST", "6400") == reason_of(response)


async def test_bad_protobuf_bytes_are_invalid_argument(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/proto", "x-member-id": "002"}
    response = await api.post(VERIFY, content=b"\xff\xff\xff\xff", headers=headers)

    assert (400, "invalid_argument") == (response.status_code, error_of(response)["code"])


async def test_an_oversize_body_is_refused_before_it_is_read(api: httpx.AsyncClient) -> None:
    body = json.dumps({"qrText": "x" * (5 * 1024 * 1024)}).encode()
    response = await api.post(VERIFY, content=body, headers=AS_002)

    assert (400, "invalid_argument", "INVALID_REQUEST", "6400") == reason_of(response)
    assert "MiB" in error_of(response)["message"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", ""]
)
async def test_a_wrong_content_type_is_a_connect_error(
    api: httpx.AsyncClient, content_type: str
) -> None:
    headers = {"x-member-id": "002", "content-type": content_type}
    response = await api.post(VERIFY, content=b'{"qrText": "x"}', headers=headers)

    assert 415 == response.status_code
    error = error_of(response)
    assert "invalid_argument" == error["code"]
    assert "application/json" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/txverify.v1.VerificationService/NoSuchMethod", 404),
        ("POST", "/txverify.v1.NoSuchService/Verify", 404),
        ("POST", "/txverify.v1.IssuerService/IssuerInquiry", 404),  # the hub's, not public
        ("GET", VERIFY, 405),
        ("PUT", VERIFY, 405),
        ("DELETE", "/openapi.json", 405),
    ],
)
async def test_unknown_routes_and_methods_are_connect_errors(
    api: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await api.request(method, path, content=b"{}", headers=AS_002)

    assert status == response.status_code
    assert "unimplemented" == error_of(response)["code"]


async def test_a_connect_deadline_becomes_the_issuer_budget(
    hub_factory: HubFactory, simulator: RunningSimulator, control: Any
) -> None:
    hub = await hub_factory(json_port=0)
    assert hub.json_api is not None
    await control.SetFaults(
        simulator_pb2.SetFaultsRequest(bank="014", faults=simulator_pb2.Faults(latency_ms=2000))
    )
    headers = {**AS_002, "connect-timeout-ms": "300"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.json_api.port}") as client:
        started = asyncio.get_running_loop().time()
        response = await client.post(
            VERIFY, json={"qrText": visible_qr(simulator)}, headers=headers
        )
        elapsed = asyncio.get_running_loop().time() - started

    assert 504 == response.status_code
    assert "deadline_exceeded" == error_of(response)["code"]
    assert elapsed < 1.5


async def test_a_stopping_hub_answers_shutting_down(
    hub_factory: HubFactory, simulator: RunningSimulator
) -> None:
    hub = await hub_factory(json_port=0)
    assert hub.json_api is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.json_api.port}") as client:
        assert 200 == (await client.get("/")).status_code  # a kept-alive connection
        hub.json_api.app.stopping = True
        response = await client.post(VERIFY, json={"qrText": visible_qr(simulator)}, headers=AS_002)

    assert (503, "unavailable", "SHUTTING_DOWN", "") == reason_of(response)


async def test_a_taken_json_port_is_named(hub_factory: HubFactory, json_hub: RunningHub) -> None:
    assert json_hub.json_api is not None
    with pytest.raises(
        OSError, match=f"JSON API cannot listen on 127.0.0.1:{json_hub.json_api.port}"
    ):
        await hub_factory(json_port=json_hub.json_api.port)


# --- the generated Connect client (connectrpc) -------------------------------------


async def test_the_generated_connect_client_verifies_and_reads_error_details(
    json_hub: RunningHub, simulator: RunningSimulator
) -> None:
    from connectrpc.errors import ConnectError

    from txverify.v1.verification_connect import VerificationServiceClient

    assert json_hub.json_api is not None
    headers = {"x-member-id": "002"}
    async with VerificationServiceClient(f"http://127.0.0.1:{json_hub.json_api.port}") as client:
        answer = await client.verify(
            verification_pb2.VerifyRequest(qr_text=visible_qr(simulator)), headers=headers
        )
        with pytest.raises(ConnectError) as caught:
            await client.verify(verification_pb2.VerifyRequest(), headers=headers)

    assert verification_pb2.VERDICT_VALID == answer.verdict
    (info,) = [d for d in caught.value.details if d.type_name == "google.rpc.ErrorInfo"]
    parsed = error_details_pb2.ErrorInfo.FromString(info.message_bytes)
    assert ("INVALID_REQUEST", "6400") == (parsed.reason, parsed.metadata["code"])


# --- gRPC-Web ------------------------------------------------------------------------


def _frame(payload: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + len(payload).to_bytes(4, "big") + payload


def _frames(body: bytes) -> list[tuple[int, bytes]]:
    found = []
    while body:
        size = int.from_bytes(body[1:5], "big")
        found.append((body[0], body[5 : 5 + size]))
        body = body[5 + size :]
    return found


async def test_grpc_web_is_served_with_its_trailers_in_the_body(
    api: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    request = verification_pb2.VerifyRequest(qr_text=visible_qr(simulator))
    headers = {"content-type": "application/grpc-web+proto", "x-member-id": "002"}

    response = await api.post(VERIFY, content=_frame(request.SerializeToString()), headers=headers)

    (_, message), (flags, trailers) = _frames(response.content)
    assert (
        verification_pb2.VERDICT_VALID
        == verification_pb2.VerifyResponse.FromString(message).verdict
    )
    assert flags & 0x80
    assert b"grpc-status: 0" in trailers.lower()


# --- mutual TLS ----------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> tls.Pki:
    directory = tmp_path / "certs"
    tls.init_dev_pki(directory, ["002", "014"])
    yesterday = datetime.now(UTC) - timedelta(days=1)
    return tls.init_dev_pki(directory, ["025"], not_after=yesterday)


@pytest.fixture
async def tls_hub(pki: tls.Pki) -> AsyncIterator[tuple[RunningHub, RunningSimulator]]:
    sim = await start_simulator(
        SimulatorSettings(codes=("002", "014"), transactions=30, pki=pki.directory)
    )
    hub = await start_hub(
        HubSettings(
            port=0, json_port=0, members=members_of(sim), mode=IdentityMode.TLS, pki=pki.directory
        )
    )
    try:
        yield hub, sim
    finally:
        await hub.stop(grace=0)
        await sim.stop()


def _client_tls(pki: tls.Pki, name: str | None, ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or pki.ca))
    if name is not None:
        files = pki.files(name)
        context.load_cert_chain(files.cert, files.key)
    return context


async def _post_tls(
    port: int, context: ssl.SSLContext, path: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(verify=context, http2=True, timeout=TIMEOUT) as client:
        return await client.post(
            f"https://127.0.0.1:{port}{path}", json=body, headers={**JSON, **headers}
        )


async def test_under_mtls_the_certificate_names_the_member(
    tls_hub: tuple[RunningHub, RunningSimulator], pki: tls.Pki
) -> None:
    hub, sim = tls_hub
    assert hub.json_api is not None
    context = _client_tls(pki, "002")

    response = await _post_tls(hub.json_api.port, context, VERIFY, {"qrText": visible_qr(sim)})
    claimed = await _post_tls(
        hub.json_api.port, context, VERIFY, {"qrText": visible_qr(sim)}, **{"x-member-id": "014"}
    )
    registry = await _post_tls(
        hub.json_api.port, context, "/txverify.v1.MemberRegistry/ListMembers", {}
    )

    assert ("HTTP/2", 200) == (response.http_version, response.status_code)
    assert (401, "unauthenticated", "IDENTITY_MISMATCH", "6421") == reason_of(claimed)
    assert (403, "permission_denied", "NOT_OPERATOR", "6403") == reason_of(registry)


async def test_under_mtls_the_operator_certificate_reaches_the_registry(
    tls_hub: tuple[RunningHub, RunningSimulator], pki: tls.Pki
) -> None:
    hub, _ = tls_hub
    assert hub.json_api is not None

    listed = await _post_tls(
        hub.json_api.port,
        _client_tls(pki, tls.OPERATOR),
        "/txverify.v1.MemberRegistry/ListMembers",
        {},
    )

    assert 200 == listed.status_code


@pytest.mark.parametrize("who", ["no certificate", "expired", "another CA", "plaintext"])
async def test_under_mtls_a_caller_without_a_valid_certificate_cannot_connect(
    tls_hub: tuple[RunningHub, RunningSimulator], pki: tls.Pki, tmp_path: Path, who: str
) -> None:
    hub, sim = tls_hub
    assert hub.json_api is not None
    port = hub.json_api.port
    body = {"qrText": visible_qr(sim)}
    if who == "plaintext":
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            with pytest.raises(httpx.HTTPError):
                await client.post(f"http://127.0.0.1:{port}{VERIFY}", json=body, headers=AS_002)
        return
    if who == "another CA":
        other = tls.init_dev_pki(tmp_path / "other", ["002"])
        context = _client_tls(other, "002", ca=pki.ca)
    else:
        context = _client_tls(pki, None if who == "no certificate" else "025")
    with pytest.raises(httpx.TransportError):  # the handshake, or the first read or write
        await _post_tls(port, context, VERIFY, body)


@pytest.mark.parametrize(
    "header",
    [
        {"connect-timeout-ms": "soon"},
        {"connect-timeout-ms": "12345678901"},
        {"connect-protocol-version": "2"},
    ],
)
async def test_bad_connect_headers_are_invalid_request(
    api: httpx.AsyncClient, header: dict[str, str]
) -> None:
    response = await api.post(VERIFY, json={"qrText": "x"}, headers={**AS_002, **header})

    assert (400, "invalid_argument", "INVALID_REQUEST", "6400") == reason_of(response)


async def test_answers_keep_thai_text_as_utf8(
    api: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    response = await api.post(VERIFY, json={"qrText": visible_qr(simulator)}, headers=AS_002)

    assert b"\\u0e" not in response.content
    assert response.json()["transaction"]["sender"]["displayName"]
