"""What the console does, through the same gRPC APIs as the CLI: MemberRegistry as the
operator, BankSimulator for faults, VerificationService as a member.

Going through the hub's own port (not its objects) means an action from the
console is checked, recorded and audited exactly as one from `txverify members`
or `txverify verify`: the registry's change log names the operator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from txverify.client import AsyncTxVerifyClient, SlipQuery, hub_aio_channel
from txverify.client.answers import error_json, message_json
from txverify.client.channels import control_aio_channel, explain_refusal
from txverify.client.errors import VerifyFailed
from txverify.errors import details_of
from txverify.runtime import tls
from txverify.v1 import registry_pb2, registry_pb2_grpc, simulator_pb2, simulator_pb2_grpc
from txverify.wire import MEMBER_HEADER

TIMEOUT = 10.0  # seconds per call: the console waits, then says what failed
# The simulator's faults are read for every snapshot: a simulator that does not
# answer must not hold the page's live view for long.
READ_TIMEOUT = 2.0


class ActionError(Exception):
    """An action the hub or the simulator refused: `status` for HTTP, `reason` from gRPC."""

    def __init__(self, message: str, *, status: int = 400, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _http_status(code: grpc.StatusCode) -> int:
    return {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.UNAUTHENTICATED: 403,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    }.get(code, 502)


def _refused(error: grpc.aio.AioRpcError, server_name: str = tls.HUB_DNS) -> ActionError:
    details = explain_refusal(details_of(error), server_name)
    return ActionError(
        details.message or error.code().name,
        status=_http_status(error.code()),
        reason=details.reason or error.code().name,
    )


class Actions:
    """gRPC clients of the hub (at `hub`) and of the simulator's control port."""

    def __init__(self, hub: str, *, pki: Path | None, operator: str, simulator: str | None) -> None:
        self.hub = hub
        self.pki = pki  # mutual TLS: the operator's and members' certificates are here
        self.operator = operator
        self.simulator = simulator
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, identity: str) -> grpc.aio.Channel:
        """One channel per identity presented (dev mode: one for all, the header names it)."""
        key = identity if self.pki is not None else ""
        if key not in self._channels:
            if self.pki is not None and not _has_certificate(self.pki, identity):
                raise ActionError(
                    f"no certificate for {identity!r} in {self.pki}: the console acts "
                    "with the certificates of the hub's certificate directory",
                    status=409,
                    reason="NO_CERTIFICATE",
                )
            self._channels[key] = hub_aio_channel(self.hub, certs=self.pki, identity=identity)
        return self._channels[key]

    def _metadata(self, identity: str) -> tuple[tuple[str, str], ...]:
        return () if self.pki is not None else ((MEMBER_HEADER, identity),)

    async def set_member_status(self, code: str, status: str, reason: str) -> registry_pb2.Member:
        wanted = {"ACTIVE": registry_pb2.MEMBER_STATUS_ACTIVE,
                  "SUSPENDED": registry_pb2.MEMBER_STATUS_SUSPENDED}.get(status)  # fmt: skip
        if wanted is None:
            raise ActionError(f"status must be ACTIVE or SUSPENDED, not {status!r}")
        stub = registry_pb2_grpc.MemberRegistryStub(self._channel(self.operator))
        try:
            answer = await stub.SetMemberStatus(
                registry_pb2.SetMemberStatusRequest(code=code, status=wanted, reason=reason),
                timeout=TIMEOUT,
                metadata=self._metadata(self.operator),
            )
        except grpc.aio.AioRpcError as error:
            raise _refused(error) from None
        return answer.member

    def _simulator(self) -> simulator_pb2_grpc.BankSimulatorAsyncStub:
        if self.simulator is None:
            raise ActionError("no simulated banks are attached to this hub", status=409)
        if "sim" not in self._channels:
            # Under mTLS as the operator (from the hub's directory), accepting only the
            # simulator's certificate (simulator.txverify), as `txverify faults` does.
            try:
                channel = control_aio_channel(self.simulator, certs=self.pki)
            except OSError as exc:  # the operator's certificate or key is missing
                raise ActionError(str(exc), status=409, reason="NO_CERTIFICATE") from None
            self._channels["sim"] = channel
        return simulator_pb2_grpc.BankSimulatorStub(self._channels["sim"])

    async def banks(self) -> list[dict[str, Any]]:
        """Each simulated bank with the faults in force."""
        stub = self._simulator()
        try:
            listed = await stub.ListBanks(simulator_pb2.ListBanksRequest(), timeout=READ_TIMEOUT)
            out = []
            for bank in listed.banks:
                faults = await stub.GetFaults(
                    simulator_pb2.GetFaultsRequest(bank=bank.code), timeout=READ_TIMEOUT
                )
                out.append(
                    {
                        "code": bank.code,
                        "name": bank.name,
                        "retention_days": bank.retention_days,
                        "pending_ms": faults.faults.pending_ms,
                        "faults": faults_dict(faults.faults),
                        "issuer_listening": faults.issuer_listening,
                    }
                )
        except grpc.aio.AioRpcError as error:
            raise _refused(error, tls.SIMULATOR_DNS) from None
        return out

    async def set_faults(self, bank: str, wanted: dict[str, Any]) -> dict[str, Any]:
        faults = faults_from(wanted)
        try:
            # The console sets the four faults only: the bank's pending window stays.
            before = await self._simulator().GetFaults(
                simulator_pb2.GetFaultsRequest(bank=bank), timeout=READ_TIMEOUT
            )
            faults.pending_ms = before.faults.pending_ms
            answer = await self._simulator().SetFaults(
                simulator_pb2.SetFaultsRequest(bank=bank, faults=faults), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            raise _refused(error, tls.SIMULATOR_DNS) from None
        return {"faults": faults_dict(answer.faults), "issuer_listening": answer.issuer_listening}

    async def verify(self, member: str, qr_text: str = "", image: bytes = b"") -> dict[str, Any]:
        """Verify as `member` a QR text or a slip image (the hub reads it); a refusal is an
        answer too. The answer is the VerifyResponse as proto3 JSON ({"ok": true, "answer":
        ...}), a refusal Connect error JSON ({"ok": false, "error": ...})."""
        # Under mTLS the certificate names the member, and no header is sent.
        client = AsyncTxVerifyClient(
            self.hub,
            member="" if self.pki is not None else member,
            channel=self._channel(member),
            timeout=TIMEOUT,
        )
        try:
            response = await client.verify(SlipQuery(qr_text=qr_text, image=image))
        except VerifyFailed as failed:  # Connect error JSON, as the JSON API answers it
            return {"ok": False, "error": error_json(failed.details)}
        return {"ok": True, "answer": message_json(response)}

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _has_certificate(pki: Path, name: str) -> bool:
    try:
        files = tls.Pki(pki).files(name)
    except ValueError:  # not a name certificates are made for
        return False
    return files.cert.exists() and files.key.exists()


def faults_dict(faults: simulator_pb2.Faults) -> dict[str, Any]:
    return {
        "latency_ms": faults.latency_ms,
        "error_rate": round(faults.error_rate, 4),
        "hang": faults.hang,
        "refuse": faults.refuse,
    }


def faults_from(wanted: dict[str, Any]) -> simulator_pb2.Faults:
    """The console's four controls; anything else in the body is refused, not ignored."""
    unknown = set(wanted) - {"latency_ms", "error_rate", "hang", "refuse"}
    if unknown:
        raise ActionError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    latency, rate = wanted.get("latency_ms", 0), wanted.get("error_rate", 0.0)
    hang, refuse = wanted.get("hang", False), wanted.get("refuse", False)
    if not isinstance(latency, int) or isinstance(latency, bool) or not 0 <= latency <= 600_000:
        raise ActionError("latency_ms must be a whole number of milliseconds, 0-600000")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise ActionError("error_rate must be a number from 0 to 1")
    if not isinstance(hang, bool) or not isinstance(refuse, bool):
        raise ActionError("hang and refuse must be true or false")
    return simulator_pb2.Faults(
        latency_ms=latency, error_rate=float(rate), hang=hang, refuse=refuse
    )
