"""Admission: the membership rules for requesters and issuers, and the rate limit."""

from __future__ import annotations

import grpc
import pytest

from membership_support import (
    Seconds,
    bank,
    failure,
)
from txverify.errors import Reason, ServiceError
from txverify.hub.admission import Admission
from txverify.hub.identity import Caller
from txverify.hub.membership import Membership
from txverify.hub.registry import (
    SLIP_VERIFICATION,
    MemberStatus,
    Role,
)
from txverify.hub.resilience.ratelimit import RateLimit, RateLimiter


@pytest.fixture
def admission(membership: Membership) -> Admission:
    return Admission(membership, RateLimiter(None))


def test_requester_is_admitted_when_active_and_subscribed(
    membership: Membership, admission: Admission
) -> None:
    registered = membership.register(bank(), None, "ops")

    admitted = admission.requester(Caller("002", "002"))

    assert registered == admitted


def test_unknown_identity_is_unknown_member(admission: Admission) -> None:
    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.UNKNOWN_MEMBER, grpc.StatusCode.UNAUTHENTICATED) == (
        error.reason,
        error.status_code,
    )


def test_claim_differing_from_the_certificate_is_identity_mismatch(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.register(bank("014"), None, "ops")

    error = failure(lambda: admission.requester(Caller("002", "014")))

    assert (Reason.IDENTITY_MISMATCH, grpc.StatusCode.UNAUTHENTICATED) == (
        error.reason,
        error.status_code,
    )


def test_suspended_requester_is_member_suspended(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.SUSPENDED, "", "ops")

    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.MEMBER_SUSPENDED, grpc.StatusCode.PERMISSION_DENIED) == (
        error.reason,
        error.status_code,
    )


def test_terminated_requester_is_member_terminated(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.MEMBER_TERMINATED, grpc.StatusCode.PERMISSION_DENIED) == (
        error.reason,
        error.status_code,
    )


def test_requester_not_subscribed_as_requester_is_not_subscribed(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), [Role.ISSUER], "ops")

    error = failure(lambda: admission.requester(Caller("002", "")))

    assert (Reason.NOT_SUBSCRIBED, grpc.StatusCode.PERMISSION_DENIED) == (
        error.reason,
        error.status_code,
    )


async def _refused(admission: Admission, caller: Caller) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await admission.admit(caller)
    return caught.value


async def test_third_immediate_call_over_a_burst_of_two_is_rate_limited(
    membership: Membership,
) -> None:
    membership.register(bank(), None, "ops")
    limited = Admission(membership, RateLimiter(RateLimit(rate=1, burst=2), clock=Seconds()))
    await limited.admit(Caller("002", ""))
    await limited.admit(Caller("002", ""))

    error = await _refused(limited, Caller("002", ""))

    assert (Reason.RATE_LIMITED, grpc.StatusCode.RESOURCE_EXHAUSTED) == (
        error.reason,
        error.status_code,
    )
    assert error.retry_after is not None
    assert error.retry_after > 0
    assert pytest.approx(1.0) == error.retry_after


async def test_rate_limited_requester_is_admitted_after_waiting(membership: Membership) -> None:
    registered = membership.register(bank(), None, "ops")
    seconds = Seconds()
    limited = Admission(membership, RateLimiter(RateLimit(rate=1, burst=2), clock=seconds))
    await limited.admit(Caller("002", ""))
    await limited.admit(Caller("002", ""))
    wait = (await _refused(limited, Caller("002", ""))).retry_after
    assert wait is not None
    seconds.now += wait

    admitted = await limited.admit(Caller("002", ""))

    assert registered == admitted


def test_the_membership_rules_alone_take_no_token(membership: Membership) -> None:
    membership.register(bank(), None, "ops")
    limiter = RateLimiter(RateLimit(rate=1, burst=1), clock=Seconds())
    limited = Admission(membership, limiter)

    for _ in range(3):
        limited.requester(Caller("002", ""))

    assert 0.0 == limiter.try_take("002")  # the one token is still there


def test_member_with_cert_identity_is_found_by_it_not_by_its_code(
    membership: Membership, admission: Admission
) -> None:
    registered = membership.register(bank(cert_identity="bank-x"), None, "ops")

    admitted = admission.requester(Caller("bank-x", ""))
    error = failure(lambda: admission.requester(Caller("002", "")))

    assert registered == admitted
    assert Reason.UNKNOWN_MEMBER == error.reason


def test_active_subscribed_issuer_is_found(membership: Membership, admission: Admission) -> None:
    registered = membership.register(bank(), None, "ops")

    found = admission.issuer("002")

    assert registered == found


@pytest.mark.parametrize("terminated", [False, True], ids=["unknown", "terminated"])
def test_issuer_unknown_or_terminated_is_issuer_not_found(
    membership: Membership, admission: Admission, terminated: bool
) -> None:
    if terminated:
        membership.register(bank(), None, "ops")
        membership.set_status("002", MemberStatus.TERMINATED, "", "ops")

    error = failure(lambda: admission.issuer("002"))

    assert (Reason.ISSUER_NOT_FOUND, grpc.StatusCode.NOT_FOUND) == (
        error.reason,
        error.status_code,
    )


def test_suspended_issuer_is_issuer_not_subscribed(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.set_status("002", MemberStatus.SUSPENDED, "", "ops")

    error = failure(lambda: admission.issuer("002"))

    assert (Reason.ISSUER_NOT_SUBSCRIBED, grpc.StatusCode.NOT_FOUND) == (
        error.reason,
        error.status_code,
    )


def test_issuer_that_unsubscribed_as_issuer_is_issuer_not_subscribed(
    membership: Membership, admission: Admission
) -> None:
    membership.register(bank(), None, "ops")
    membership.unsubscribe("002", SLIP_VERIFICATION, Role.ISSUER, "ops")

    error = failure(lambda: admission.issuer("002"))

    assert Reason.ISSUER_NOT_SUBSCRIBED == error.reason
