"""Membership: the lifecycle rules of members, stored durably, applied to the live directory."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from txverify.errors import Reason, ServiceError, invalid_field
from txverify.hub.registry import (
    SERVICES,
    InvalidMember,
    Member,
    MemberDirectory,
    MemberStatus,
    Role,
    Subscription,
    default_roles,
    shown,
    with_changes,
)
from txverify.hub.registry.store import Change, RegistryStore, Snapshot

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
BOOTSTRAP = "bootstrap"
UPDATABLE = ("name", "issuer_endpoint", "cert_identity", "rate_limit_rps", "rate_limit_burst")
_ALLOWED = {
    MemberStatus.ACTIVE: {MemberStatus.SUSPENDED, MemberStatus.TERMINATED},
    MemberStatus.SUSPENDED: {MemberStatus.ACTIVE, MemberStatus.TERMINATED},
    MemberStatus.TERMINATED: set[MemberStatus](),
}
# How long a change made here waits for the other hub processes to apply it
# (they hear of it in 2-35 ms), and how often it asks the database meanwhile.
# Past the wait the change is answered anyway: it is committed, and a process
# that slow is logged by name.
APPLIED_TIMEOUT = 1.0
APPLIED_POLL = 0.01


def invalid_member(error: InvalidMember) -> ServiceError:
    """INVALID_REQUEST naming the bad field as a request does: `member.rate_limit_rps`."""
    return invalid_field(f"member.{error.field}", error.problem)


def replica_name() -> str:
    """This process among the hub processes following one registry: host, pid and a
    random part (a pid is reused, across restarts and across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Membership:
    """Registers and changes members; every change is durable first, then live at once.

    `directory` is replaced whole on each change (readers never see half a
    change) and `on_change` is told, so caches keyed by member (rate limits,
    issuer channels) follow without a restart.

    shared: other processes (hub workers, hubs on one PostgreSQL) change the
    same store. Their changes arrive through `refresh`, or `take` for a read
    made elsewhere (server/txverify/hub/registry/watch.py calls them when told of a change
    and periodically), and every change made here starts from a fresh read, so
    its checks see the others' changes. `wait_applied` waits until the others
    have a change made here (PostgreSQL), so a client that made it through
    this process and goes to another next finds it there.
    """

    def __init__(
        self,
        store: RegistryStore,
        *,
        clock: Clock | None = None,
        on_change: Callable[[Member], None] | None = None,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.on_change = on_change
        self.shared = shared
        self.replica = replica_name()
        snapshot = store.load()
        self.directory = MemberDirectory(snapshot.members)
        self.version = 0  # how many times `directory` was replaced
        # Every change up to `applied` is in `directory` (it came from a read);
        # `last_change`: the newest change this process read or made.
        self.applied = self.last_change = snapshot.last_change

    def refresh(self) -> list[Member]:
        """Take in what another process changed in the store; returns the members that
        changed (each also told to `on_change`). A few members: one cheap read."""
        changed = self.take(self.store.load(), self.version)
        assert changed is not None  # nothing ran between the read and taking it
        return changed

    def take(self, snapshot: Snapshot, read_at: int) -> list[Member] | None:
        """Take in a read of the store made (in a thread, say) when `version` was
        `read_at`: the members that changed, each told to `on_change`; or None, and
        nothing taken, if the directory was replaced since, for then the read may be
        older than the directory (a change made here meanwhile): read again."""
        if read_at != self.version:
            return None
        stored = snapshot.members
        changed = [m for m in stored if self.directory.get(m.code) != m]
        self.applied = max(self.applied, snapshot.last_change)
        self.last_change = max(self.last_change, snapshot.last_change)
        if changed:
            self._replace(MemberDirectory(stored))
            for member in changed:
                log.info("member %s changed by another process: %s", member.code, member.status)
                if self.on_change is not None:
                    self.on_change(member)
        return changed

    def _replace(self, directory: MemberDirectory) -> None:
        self.directory = directory
        self.version += 1

    def _fresh(self) -> None:
        if self.shared:
            self.refresh()

    def _commit(self, member: Member, actor: str, action: str, details: str) -> Member:
        made = self.store.save(member, Change(member.code, self.clock(), actor, action, details))
        # Not `applied`: a change another process made just before may not be here yet.
        self.last_change = max(self.last_change, made)
        self._replace(self.directory.replaced(member))
        log.info("member %s %s by %s: %s", member.code, action, actor, details)
        if self.on_change is not None:
            self.on_change(member)
        return member

    async def wait_applied(self, change: int, within: float = APPLIED_TIMEOUT) -> dict[str, int]:
        """Wait until every other live hub process has applied `change` to its directory,
        at most `within` seconds; returns those still behind then (logged by name),
        with the last change each has. At once when no process reports (SQLite).

        This process counts as having it: it applies its own changes before
        answering. The database is asked every APPLIED_POLL seconds, in a thread;
        if it cannot be asked, that is logged and the wait ends: the change is
        committed either way, and the others still re-read within seconds.
        """
        replicas = self.store.replicas
        if replicas is None or change <= 0:
            return {}
        started = time.monotonic()
        while True:
            try:
                behind = await asyncio.to_thread(replicas.behind, change, self.replica)
            except Exception as error:  # the pool's timeout as much as a database error
                log.warning(
                    "cannot tell whether the other hub processes have registry change %d "
                    "(%s); answering without waiting",
                    change,
                    str(error).strip() or type(error).__name__,
                )
                return {}
            waited = time.monotonic() - started
            if not behind or waited >= within:
                break
            await asyncio.sleep(APPLIED_POLL)
        if behind:
            log.warning(
                "registry change %d not applied after %.2fs by %s; answering anyway (it is "
                "committed; they apply it when they next re-read)",
                change,
                waited,
                ", ".join(f"{replica} (at {applied})" for replica, applied in behind.items()),
            )
        return behind

    def get(self, code: str) -> Member:
        member = self.directory.get(code)
        if member is None:
            raise ServiceError(
                Reason.MEMBER_NOT_FOUND, f"no member {shown(code)}", metadata={"field": "code"}
            )
        return member

    def history(self, code: str) -> list[Change]:
        self.get(code)
        return self.store.history(code)

    def register(self, member: Member, roles: Sequence[Role] | None, actor: str) -> Member:
        """A new member, or a terminated one registering again; starts ACTIVE.

        `roles` None means the default roles; an empty sequence means none yet
        (a member must ask to subscribe).
        """
        self._fresh()
        existing = self.directory.get(member.code)
        if existing is not None and existing.status is not MemberStatus.TERMINATED:
            raise ServiceError(
                Reason.MEMBER_EXISTS,
                f"member {member.code} exists ({existing.status}); update it instead",
                metadata={"field": "member.code"},
            )
        clash = self.directory.by_identity(member.identity)
        if (
            clash is not None
            and clash.code != member.code
            and clash.status is not MemberStatus.TERMINATED
        ):
            raise invalid_field("member.cert_identity", f"already the identity of {clash.code}")
        now = self.clock()
        chosen = tuple(dict.fromkeys(default_roles(member) if roles is None else roles))
        if Role.ISSUER in chosen and not member.issuer_endpoint:
            raise invalid_field("member.issuer_endpoint", "an issuer needs an issuer_endpoint")
        fresh = with_changes(
            member,
            status=MemberStatus.ACTIVE,
            subscriptions=tuple(Subscription(next(iter(SERVICES)), r, now) for r in chosen),
            created_at=now,
            updated_at=now,
        )
        action = "REGISTER" if existing is None else "REGISTER_AGAIN"
        return self._commit(
            fresh, actor, action, f"{fresh.name!r} roles {[r.value for r in chosen]}"
        )

    def bootstrap(self, members: Sequence[Member]) -> None:
        """Bring the registry in line with a TOML file: register the missing; for known
        members, take the file's name and endpoint (ports move between runs) but never
        touch what operators decide: status and subscriptions.

        Hubs starting together on one database may race to register a member: the
        loser finds it registered (MEMBER_EXISTS) and treats it as known."""
        for member in members:
            try:
                self._bootstrap(member)
            except ServiceError as error:
                if error.reason is not Reason.MEMBER_EXISTS:
                    raise
                self._bootstrap(member)  # registered meanwhile: the directory knows it now

    def _bootstrap(self, member: Member) -> None:
        existing = self.directory.get(member.code)
        if existing is None:
            self.register(member, [s.role for s in member.subscriptions], BOOTSTRAP)
            if member.status is not MemberStatus.ACTIVE:
                self.set_status(member.code, member.status, "bootstrap file", BOOTSTRAP)
            return
        if existing.status is MemberStatus.TERMINATED:
            return
        changes = {
            k: getattr(member, k)
            for k in ("name", "issuer_endpoint")
            if getattr(member, k) != getattr(existing, k)
        }
        if changes:
            self.update(member.code, changes, BOOTSTRAP)

    def update(self, code: str, changes: dict[str, Any], actor: str) -> Member:
        self._fresh()
        member = self.get(code)
        if member.status is MemberStatus.TERMINATED:
            raise ServiceError(
                Reason.INVALID_TRANSITION, f"member {code} is terminated; register it again"
            )
        unknown = set(changes) - set(UPDATABLE)
        if unknown:
            raise invalid_field(
                "update_mask",
                f"cannot update {shown(sorted(unknown))}; only {', '.join(UPDATABLE)}",
            )
        try:
            updated = with_changes(member, **changes, updated_at=self.clock())
        except InvalidMember as exc:
            raise invalid_member(exc) from None
        except (ValueError, TypeError) as exc:
            raise invalid_field("member", shown(str(exc))) from None
        if member.subscribed(Role.ISSUER) and not updated.issuer_endpoint:
            raise invalid_field("member.issuer_endpoint", "an issuer needs an issuer_endpoint")
        clash = self.directory.by_identity(updated.identity)
        if clash is not None and clash.code != code and clash.status is not MemberStatus.TERMINATED:
            raise invalid_field("member.cert_identity", f"already the identity of {clash.code}")
        details = ", ".join(f"{k} {getattr(member, k)!r} -> {v!r}" for k, v in changes.items())
        return self._commit(updated, actor, "UPDATE", details)

    def set_status(self, code: str, status: MemberStatus, reason: str, actor: str) -> Member:
        self._fresh()
        member = self.get(code)
        if len(reason) > 200:
            raise invalid_field("reason", "at most 200 characters")
        if "\x00" in reason:  # PostgreSQL cannot store it in the history
            raise invalid_field("reason", "must not contain NUL characters")
        if status is member.status:
            return member
        if status not in _ALLOWED[member.status]:
            hint = "; register it again" if member.status is MemberStatus.TERMINATED else ""
            raise ServiceError(
                Reason.INVALID_TRANSITION,
                f"member {code} cannot go from {member.status} to {status}{hint}",
            )
        updated = with_changes(member, status=status, updated_at=self.clock())
        details = f"status {member.status} -> {status}" + (f": {reason}" if reason else "")
        return self._commit(updated, actor, "STATUS", details)

    def subscribe(self, code: str, service: str, role: Role, actor: str) -> Member:
        member = self._subscribable(code, service)
        if member.subscribed(role, service):
            return member
        if role is Role.ISSUER and not member.issuer_endpoint:
            raise invalid_field("role", "set an issuer_endpoint before subscribing as ISSUER")
        now = self.clock()
        updated = with_changes(
            member,
            subscriptions=(*member.subscriptions, Subscription(service, role, now)),
            updated_at=now,
        )
        return self._commit(updated, actor, "SUBSCRIBE", f"{service} as {role}")

    def unsubscribe(self, code: str, service: str, role: Role, actor: str) -> Member:
        member = self._subscribable(code, service)
        if not member.subscribed(role, service):
            return member
        remaining = tuple(
            s for s in member.subscriptions if not (s.role is role and s.service == service)
        )
        updated = with_changes(member, subscriptions=remaining, updated_at=self.clock())
        return self._commit(updated, actor, "UNSUBSCRIBE", f"{service} as {role}")

    def _subscribable(self, code: str, service: str) -> Member:
        if service not in SERVICES:
            raise invalid_field("service", f"one of {sorted(SERVICES)}")
        self._fresh()
        member = self.get(code)
        if member.status is MemberStatus.TERMINATED:
            raise ServiceError(
                Reason.INVALID_TRANSITION, f"member {code} is terminated; register it again"
            )
        return member
