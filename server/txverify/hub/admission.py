"""Admission: is this caller a member allowed to verify now, and may this issuer be asked?"""

from __future__ import annotations

from typing import Protocol

from txverify.errors import Reason, ServiceError
from txverify.hub.identity import Caller
from txverify.hub.membership import Membership
from txverify.hub.registry import Member, MemberStatus, Role
from txverify.hub.resilience.ratelimit import RateLimit


def member_rate_limit(member: Member) -> RateLimit | None:
    """The member's own limit, or None for the hub's default."""
    if member.rate_limit_rps <= 0:
        return None
    return RateLimit(rate=member.rate_limit_rps, burst=member.rate_limit_burst or 1)


class Limiter(Protocol):
    """Per-member rate limits: in this process (RateLimiter) or shared (SharedRateLimiter)."""

    def limit_for(self, key: str) -> RateLimit | None: ...

    def set_limit(self, key: str, limit: RateLimit | None) -> None: ...

    async def take(self, key: str) -> float: ...

    async def charge(self, key: str, tokens: float) -> None: ...

    async def tokens(self, key: str) -> float | None: ...


# What a not-found answer costs a member's rate limit, in calls, is
# HubSettings.not_found_cost (1 for an Admission built without it: no difference).
# Guessing transRefs is the attack on a slip API; as PIX's key directory does, a
# miss costs more than a hit. Only SLIP_NOT_FOUND is a miss: SLIP_EXPIRED names a
# real (old) transaction, ISSUER_NOT_FOUND a bank code (a public list of ~100, which
# the hub answers alone) and INVALID_SLIP_QR a malformed text (refused before any
# issuer is asked; it tells a prober nothing): none is a guess that found nothing.
CHARGED_REASONS = frozenset({Reason.SLIP_NOT_FOUND})


class Admission:
    """The membership rules of the seed, checked on every request against the live directory."""

    def __init__(
        self, membership: Membership, limiter: Limiter, *, not_found_cost: int = 1
    ) -> None:
        self.membership = membership
        self.limiter = limiter
        self.not_found_cost = not_found_cost

    async def admit(self, caller: Caller) -> Member:
        """The calling member if it may send Verify now (membership, then its rate limit)."""
        member = self.requester(caller)
        wait = await self.limiter.take(member.code)
        if wait > 0:
            raise ServiceError(
                Reason.RATE_LIMITED,
                f"member {member.code} is over its rate limit; retry in {wait:.3f}s",
                retry_after=wait,
            )
        return member

    async def answered(self, member: str, reason: Reason) -> None:
        """A failed Verify of an admitted `member`: a not-found costs the rest of its
        price now (admit took one token), so the member's next calls may wait."""
        if reason in CHARGED_REASONS and self.not_found_cost > 1:
            await self.limiter.charge(member, self.not_found_cost - 1)

    def requester(self, caller: Caller) -> Member:
        """The calling member if the membership rules let it send Verify (not the rate limit)."""
        member = self.membership.directory.by_identity(caller.identity)
        if member is None:
            raise ServiceError(
                Reason.UNKNOWN_MEMBER, f"{caller.identity!r} is not a member of the service"
            )
        if caller.claimed and caller.claimed != member.code:
            raise ServiceError(
                Reason.IDENTITY_MISMATCH,
                f"the certificate is member {member.code}'s; the request claims {caller.claimed!r}",
            )
        if member.status is MemberStatus.SUSPENDED:
            raise ServiceError(Reason.MEMBER_SUSPENDED, f"member {member.code} is suspended")
        if member.status is MemberStatus.TERMINATED:
            raise ServiceError(Reason.MEMBER_TERMINATED, f"member {member.code} is terminated")
        if not member.subscribed(Role.REQUESTER):
            raise ServiceError(
                Reason.NOT_SUBSCRIBED,
                f"member {member.code} does not subscribe to slip verification as requester",
            )
        return member

    def issuer(self, code: str) -> Member:
        """The member to ask about a slip (flow 2.2), or NOT_FOUND saying why not (flow 2.1)."""
        member = self.membership.directory.get(code)
        if member is None or member.status is MemberStatus.TERMINATED:
            raise ServiceError(
                Reason.ISSUER_NOT_FOUND,
                f"{code} is not a member of slip verification",
                metadata={"issuer": code},
            )
        if (
            member.status is MemberStatus.SUSPENDED
            or not member.subscribed(Role.ISSUER)
            or not member.issuer_endpoint
        ):
            raise ServiceError(
                Reason.ISSUER_NOT_SUBSCRIBED,
                f"member {code} does not offer slip verification as issuer",
                metadata={"issuer": code},
            )
        return member
