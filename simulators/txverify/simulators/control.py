"""BankSimulator: the control API of the simulated banks (accounts, transfers, slips, faults)."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc

from txverify.errors import FieldViolation, Reason, ServiceError, abort, invalid_field
from txverify.runtime.storage import to_micros
from txverify.runtime.tls import peer_identity
from txverify.simulators.bank import Bank, SlipVisibility, TransferOrder
from txverify.simulators.faults import FaultSpec
from txverify.simulators.issuer import masked_transaction
from txverify.simulators.ledger import AccountRecord, ProxyKind, ProxyRecord, StoredSlip
from txverify.simulators.profiles import Kind
from txverify.v1 import common_pb2, simulator_pb2, simulator_pb2_grpc

if TYPE_CHECKING:
    from txverify.simulators.node import BankNode

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
MAX_PAGE = 1000
_KIND = {Kind.BANK: common_pb2.MEMBER_KIND_BANK, Kind.NON_BANK: common_pb2.MEMBER_KIND_NON_BANK}
_STATE = {
    SlipVisibility.VISIBLE: simulator_pb2.SLIP_STATE_VISIBLE,
    SlipVisibility.NOT_YET_VISIBLE: simulator_pb2.SLIP_STATE_NOT_YET_VISIBLE,
    SlipVisibility.EXPIRED: simulator_pb2.SLIP_STATE_EXPIRED,
    SlipVisibility.PENDING: simulator_pb2.SLIP_STATE_PENDING,
}


def _proxy_kind(proxy: common_pb2.Proxy, field: str) -> ProxyKind:
    name = common_pb2.ProxyType.Name(proxy.type).removeprefix("PROXY_TYPE_")
    try:
        return ProxyKind(name)
    except ValueError:
        raise ServiceError(
            Reason.INVALID_REQUEST,
            f"{field}.type must be MSISDN, NATID, EWALLETID, EMAIL or BILLERID",
            metadata={"field": f"{field}.type"},
            violations=(FieldViolation(f"{field}.type", "a supported proxy type"),),
        ) from None


def account_info(bank: str, account: AccountRecord) -> simulator_pb2.AccountInfo:
    return simulator_pb2.AccountInfo(
        bank=bank,
        account_number=account.account_number,
        name_th=account.name_th,
        name_en=account.name_en,
        balance_satang=account.balance,
        proxies=[
            common_pb2.Proxy(type=common_pb2.ProxyType.Value(f"PROXY_TYPE_{p.kind}"), value=p.value)
            for p in account.proxies
        ],
    )


def encode_page_token(slip: StoredSlip) -> str:
    key = f"{to_micros(slip.transaction.trans_time)}:{slip.transaction.trans_ref}"
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_page_token(token: str) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        micros, ref = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        return int(micros), ref
    except (ValueError, UnicodeError):
        raise ServiceError(
            Reason.INVALID_REQUEST,
            "page_token is not one this simulator gave out",
            metadata={"field": "page_token"},
        ) from None


def _trans_time(request: simulator_pb2.TransferRequest) -> datetime | None:
    """A backdated transfer's time, or None for now."""
    if not request.HasField("trans_time"):
        return None
    try:
        return request.trans_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise invalid_field("trans_time", "a valid time") from None


class BankSimulatorServicer(simulator_pb2_grpc.BankSimulatorServicer):
    """Thin adapter: finds the bank named in the request and calls its Bank.

    `callers`: under mTLS, the certificate names (CN) that may use the API; every
    other certificate of the CA (a member's, the hub's) is refused NOT_OPERATOR.
    None: no TLS, loopback only (SimulatorSettings), anyone there may call.
    """

    def __init__(
        self, nodes: dict[str, BankNode], *, callers: frozenset[str] | None = None
    ) -> None:
        self.nodes = nodes
        self.callers = callers
        self.background: set[asyncio.Task[None]] = set()

    def _admit(self, context: Context) -> None:
        # The API moves money and lists every slip with its QR: only the operator
        # (or QA) may, not a member holding a certificate of the same CA.
        if self.callers is None:
            return
        caller = peer_identity(context)
        if caller not in self.callers:
            log.warning("control API refused caller %r", caller)
            raise ServiceError(
                Reason.NOT_OPERATOR,
                f"the simulator's control API takes the certificate of "
                f"{' or '.join(sorted(self.callers))}, not {caller!r}",
            )

    def _node(self, code: str) -> BankNode:
        node = self.nodes.get(code)
        if node is None:
            raise ServiceError(
                Reason.UNKNOWN_BANK,
                f"this simulator runs {', '.join(sorted(self.nodes))}; not {code!r}",
                metadata={"field": "bank"},
            )
        return node

    def _bank(self, code: str) -> Bank:
        return self._node(code).bank

    async def ListBanks(
        self, request: simulator_pb2.ListBanksRequest, context: Context
    ) -> simulator_pb2.ListBanksResponse:
        try:
            self._admit(context)
        except ServiceError as error:
            await abort(context, error)
        banks = [
            simulator_pb2.SimulatedBank(
                code=code,
                short_name=node.bank.profile.short_name,
                name=node.bank.profile.name,
                kind=_KIND[node.bank.profile.kind],
                issuer_address=node.address,
                transactions=node.bank.ledger.count_transactions(),
                accounts=node.bank.ledger.count_accounts(),
                retention_days=node.bank.retention_days,
                pending_ms=node.faults.pending_ms,
            )
            for code, node in sorted(self.nodes.items())
        ]
        return simulator_pb2.ListBanksResponse(banks=banks)

    async def OpenAccount(
        self, request: simulator_pb2.OpenAccountRequest, context: Context
    ) -> simulator_pb2.OpenAccountResponse:
        try:
            self._admit(context)
            bank = self._bank(request.bank)
            account = bank.open_account(
                name_th=request.name_th,
                name_en=request.name_en,
                initial_balance=request.initial_balance_satang,
                proxies=tuple(
                    (_proxy_kind(p, f"proxies[{i}]"), p.value)
                    for i, p in enumerate(request.proxies)
                ),
                account_number=request.account_number,
            )
        except ServiceError as error:
            await abort(context, error)
        return simulator_pb2.OpenAccountResponse(account=account_info(bank.code, account))

    async def Transfer(
        self, request: simulator_pb2.TransferRequest, context: Context
    ) -> simulator_pb2.TransferResponse:
        try:
            self._admit(context)
            bank = self._bank(request.bank)
            proxy = None
            if request.HasField("to_proxy"):
                proxy = ProxyRecord(
                    _proxy_kind(request.to_proxy, "to_proxy"), request.to_proxy.value
                )
            result = bank.transfer(
                TransferOrder(
                    from_account=request.from_account,
                    to_bank=request.to_bank,
                    to_account=request.to_account,
                    to_proxy=proxy,
                    amount=request.amount_satang,
                    fee=request.fee_satang,
                    ref1=request.ref1,
                    ref2=request.ref2,
                    ref3=request.ref3,
                    to_merchant_id=request.to_merchant_id,
                    receiver_name_th=request.receiver_name_th,
                    receiver_name_en=request.receiver_name_en,
                    at=_trans_time(request),
                )
            )
        except ServiceError as error:
            await abort(context, error)
        log.info(
            "transfer bank=%s trans_ref=%s amount_satang=%d",
            bank.code,
            result.transaction.trans_ref,
            result.transaction.amount,
        )
        return simulator_pb2.TransferResponse(
            transaction=masked_transaction(result.transaction),
            qr_text=result.qr_text,
            balance_satang=result.balance,
        )

    async def Reverse(
        self, request: simulator_pb2.ReverseRequest, context: Context
    ) -> simulator_pb2.ReverseResponse:
        try:
            self._admit(context)
            tx = self._bank(request.bank).reverse(request.trans_ref)
        except ServiceError as error:
            await abort(context, error)
        return simulator_pb2.ReverseResponse(transaction=masked_transaction(tx))

    async def ListTransactions(
        self, request: simulator_pb2.ListTransactionsRequest, context: Context
    ) -> simulator_pb2.ListTransactionsResponse:
        try:
            self._admit(context)
            bank = self._bank(request.bank)
            if not 0 <= request.page_size <= MAX_PAGE:
                raise ServiceError(
                    Reason.INVALID_REQUEST,
                    f"page_size must be 1-{MAX_PAGE} (0 = 100)",
                    metadata={"field": "page_size"},
                )
            size = request.page_size or 100
            slips = bank.list_slips(size, decode_page_token(request.page_token))
        except ServiceError as error:
            await abort(context, error)
        now = bank.clock()
        return simulator_pb2.ListTransactionsResponse(
            slips=[
                simulator_pb2.Slip(
                    transaction=masked_transaction(s.transaction),
                    qr_text=s.qr_text,
                    state=_STATE[bank.visibility(s.transaction, now)],
                )
                for s in slips
            ],
            next_page_token=encode_page_token(slips[-1]) if len(slips) == size else "",
        )

    async def SetFaults(
        self, request: simulator_pb2.SetFaultsRequest, context: Context
    ) -> simulator_pb2.SetFaultsResponse:
        try:
            self._admit(context)
            node = self._node(request.bank)
            await node.apply(FaultSpec.from_proto(request.faults))
        except ServiceError as error:
            await abort(context, error)
        return simulator_pb2.SetFaultsResponse(
            faults=node.faults.to_proto(), issuer_listening=node.listening
        )

    async def GetFaults(
        self, request: simulator_pb2.GetFaultsRequest, context: Context
    ) -> simulator_pb2.GetFaultsResponse:
        try:
            self._admit(context)
            node = self._node(request.bank)
        except ServiceError as error:
            await abort(context, error)
        return simulator_pb2.GetFaultsResponse(
            faults=node.faults.to_proto(), issuer_listening=node.listening
        )
