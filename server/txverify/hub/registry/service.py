"""MemberRegistry: the operators' gRPC API over Membership, with protobuf conversions."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any, TypeVar

import grpc

from txverify.errors import Reason, ServiceError, abort, invalid_field
from txverify.hub.identity import IdentityMode, identify
from txverify.hub.membership import UPDATABLE, Membership, invalid_member
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    InvalidMember,
    Member,
    MemberKind,
    MemberStatus,
    Role,
    shown,
)
from txverify.hub.registry.store import Change
from txverify.hub.resilience.breaker import CircuitState
from txverify.units import to_timestamp
from txverify.v1 import common_pb2, registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
CircuitLookup = Callable[[str], CircuitState | None]
_KIND_TO_PB = {
    MemberKind.BANK: common_pb2.MEMBER_KIND_BANK,
    MemberKind.NON_BANK: common_pb2.MEMBER_KIND_NON_BANK,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_STATUS_TO_PB = {
    MemberStatus.ACTIVE: registry_pb2.MEMBER_STATUS_ACTIVE,
    MemberStatus.SUSPENDED: registry_pb2.MEMBER_STATUS_SUSPENDED,
    MemberStatus.TERMINATED: registry_pb2.MEMBER_STATUS_TERMINATED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
_ROLE_TO_PB = {Role.REQUESTER: registry_pb2.ROLE_REQUESTER, Role.ISSUER: registry_pb2.ROLE_ISSUER}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}
_CIRCUIT_TO_PB = {
    CircuitState.CLOSED: registry_pb2.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: registry_pb2.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: registry_pb2.CIRCUIT_STATE_HALF_OPEN,
}


def _stamp(when: datetime | None) -> Any:
    return to_timestamp(when) if when is not None else None


def member_to_pb(member: Member, circuit: CircuitState | None = None) -> registry_pb2.Member:
    return registry_pb2.Member(
        code=member.code,
        name=member.name,
        kind=_KIND_TO_PB[member.kind],
        issuer_endpoint=member.issuer_endpoint,
        status=_STATUS_TO_PB[member.status],
        subscriptions=[
            registry_pb2.Subscription(
                service=s.service, role=_ROLE_TO_PB[s.role], since=_stamp(s.since)
            )
            for s in member.subscriptions
        ],
        cert_identity=member.cert_identity,
        rate_limit_rps=member.rate_limit_rps,
        rate_limit_burst=member.rate_limit_burst,
        created_at=_stamp(member.created_at),
        updated_at=_stamp(member.updated_at),
        issuer_circuit=_CIRCUIT_TO_PB.get(circuit, registry_pb2.CIRCUIT_STATE_UNSPECIFIED)
        if circuit is not None
        else registry_pb2.CIRCUIT_STATE_UNSPECIFIED,
    )


def member_from_pb(pb: registry_pb2.Member) -> Member:
    """The member a request describes, or INVALID_REQUEST naming its bad field.
    Output-only fields (status, subscriptions, times, circuit) are not read."""
    if pb.kind == common_pb2.MEMBER_KIND_UNSPECIFIED:
        kind = MemberKind.BANK
    elif pb.kind in _KIND_FROM_PB:
        kind = _KIND_FROM_PB[pb.kind]
    else:  # proto3 enums are open: any number arrives
        raise invalid_field("member.kind", "MEMBER_KIND_BANK or MEMBER_KIND_NON_BANK")
    try:
        return Member(
            code=pb.code,
            name=pb.name,
            kind=kind,
            issuer_endpoint=pb.issuer_endpoint,
            cert_identity=pb.cert_identity,
            rate_limit_rps=pb.rate_limit_rps,
            rate_limit_burst=pb.rate_limit_burst,
        )
    except InvalidMember as exc:
        raise invalid_member(exc) from None


def change_to_pb(change: Change) -> registry_pb2.MemberChange:
    return registry_pb2.MemberChange(
        at=to_timestamp(change.at), actor=change.actor, action=change.action, details=change.details
    )


def _role(value: int, field: str = "role") -> Role:
    role: Role | None = _ROLE_FROM_PB.get(value)  # type: ignore[call-overload]
    if role is None:
        raise invalid_field(field, "ROLE_REQUESTER or ROLE_ISSUER")
    return role


_INTERNAL = ServiceError(Reason.INTERNAL, "internal error in the hub")
_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def answers_internal_on_bugs(
    method: Callable[[_Servicer, _Request, Context], Awaitable[_Response]],
) -> Callable[[_Servicer, _Request, Context], Awaitable[_Response]]:
    """An RPC method that answers an unexpected exception INTERNAL/INTERNAL (logged with
    its traceback), as Verify does: gRPC would answer UNKNOWN with the exception's text."""

    @functools.wraps(method)
    async def guarded(self: _Servicer, request: _Request, context: Context) -> _Response:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:  # abort(): the answer is already decided
            raise
        except Exception:
            log.exception("%s failed unexpectedly", method.__name__)
            await abort(context, _INTERNAL)

    return guarded


class MemberRegistryServicer(registry_pb2_grpc.MemberRegistryServicer):
    """Thin adapter: checks the caller is an operator, converts, delegates to Membership."""

    def __init__(
        self,
        membership: Membership,
        *,
        mode: IdentityMode,
        operators: Collection[str],
        circuit: CircuitLookup,
    ) -> None:
        self.membership = membership
        self.mode = mode
        self.operators = frozenset(operators)
        self.circuit = circuit

    def _operator(self, context: Context) -> str:
        caller = identify(context, self.mode)
        if caller.identity not in self.operators:
            raise ServiceError(
                Reason.NOT_OPERATOR, "only an operator may manage members", metadata={}
            )
        return caller.identity

    def _pb(self, member: Member) -> registry_pb2.Member:
        return member_to_pb(member, self.circuit(member.code))

    async def _everywhere(self) -> None:
        """Answer a change once the other hub processes have it too, so the caller's
        next call finds it whichever process a load balancer sends it to (at most
        a second: past that it is answered and the laggards logged). A call that
        changed nothing waits for what its fresh read saw, for the same reason."""
        await self.membership.wait_applied(self.membership.last_change)

    @answers_internal_on_bugs
    async def RegisterMember(
        self, request: registry_pb2.RegisterMemberRequest, context: Context
    ) -> registry_pb2.RegisterMemberResponse:
        try:
            actor = self._operator(context)
            roles = [_role(r, "roles") for r in request.roles] or None  # none: the defaults
            member = self.membership.register(member_from_pb(request.member), roles, actor)
        except ServiceError as error:
            await abort(context, error)
        await self._everywhere()
        return registry_pb2.RegisterMemberResponse(member=self._pb(member))

    @answers_internal_on_bugs
    async def GetMember(
        self, request: registry_pb2.GetMemberRequest, context: Context
    ) -> registry_pb2.GetMemberResponse:
        try:
            self._operator(context)
            member = self.membership.get(request.code)
            history = self.membership.history(request.code) if request.include_history else []
        except ServiceError as error:
            await abort(context, error)
        return registry_pb2.GetMemberResponse(
            member=self._pb(member), history=[change_to_pb(c) for c in history]
        )

    @answers_internal_on_bugs
    async def ListMembers(
        self, request: registry_pb2.ListMembersRequest, context: Context
    ) -> registry_pb2.ListMembersResponse:
        try:
            self._operator(context)
        except ServiceError as error:
            await abort(context, error)
        return registry_pb2.ListMembersResponse(
            members=[self._pb(m) for m in self.membership.directory.all()]
        )

    @answers_internal_on_bugs
    async def UpdateMember(
        self, request: registry_pb2.UpdateMemberRequest, context: Context
    ) -> registry_pb2.UpdateMemberResponse:
        try:
            actor = self._operator(context)
            paths = list(request.update_mask.paths)
            if not paths:
                raise invalid_field(
                    "update_mask", f"name the fields to change: {', '.join(UPDATABLE)}"
                )
            unknown = [p for p in paths if p not in UPDATABLE]
            if unknown:
                raise invalid_field(
                    "update_mask", f"cannot update {shown(unknown)}; only {', '.join(UPDATABLE)}"
                )
            changes = {p: getattr(request.member, p) for p in paths}
            member = self.membership.update(request.code, changes, actor)
        except ServiceError as error:
            await abort(context, error)
        await self._everywhere()
        return registry_pb2.UpdateMemberResponse(member=self._pb(member))

    @answers_internal_on_bugs
    async def SetMemberStatus(
        self, request: registry_pb2.SetMemberStatusRequest, context: Context
    ) -> registry_pb2.SetMemberStatusResponse:
        try:
            actor = self._operator(context)
            status = _STATUS_FROM_PB.get(request.status)
            if status is None:
                raise invalid_field("status", "ACTIVE, SUSPENDED or TERMINATED")
            member = self.membership.set_status(request.code, status, request.reason, actor)
        except ServiceError as error:
            await abort(context, error)
        await self._everywhere()
        return registry_pb2.SetMemberStatusResponse(member=self._pb(member))

    @answers_internal_on_bugs
    async def Subscribe(
        self, request: registry_pb2.SubscribeRequest, context: Context
    ) -> registry_pb2.SubscribeResponse:
        try:
            actor = self._operator(context)
            member = self.membership.subscribe(
                request.code, request.service or SLIP_VERIFICATION, _role(request.role), actor
            )
        except ServiceError as error:
            await abort(context, error)
        await self._everywhere()
        return registry_pb2.SubscribeResponse(member=self._pb(member))

    @answers_internal_on_bugs
    async def Unsubscribe(
        self, request: registry_pb2.UnsubscribeRequest, context: Context
    ) -> registry_pb2.UnsubscribeResponse:
        try:
            actor = self._operator(context)
            member = self.membership.unsubscribe(
                request.code, request.service or SLIP_VERIFICATION, _role(request.role), actor
            )
        except ServiceError as error:
            await abort(context, error)
        await self._everywhere()
        return registry_pb2.UnsubscribeResponse(member=self._pb(member))
