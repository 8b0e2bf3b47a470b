"""A simulated bank's IssuerService: answers inquiries from its ledger, masked, with faults."""

from __future__ import annotations

import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import grpc

from txverify import units
from txverify.errors import Reason, ServiceError, abort
from txverify.runtime.tls import peer_identity
from txverify.simulators import masking
from txverify.simulators.bank import CACHE_SIZE, Bank
from txverify.simulators.faults import FaultSpec, InjectedFault, before_inquiry
from txverify.simulators.ledger import LedgerTransaction, PartyRecord, TxStatus
from txverify.v1 import common_pb2, issuer_pb2, issuer_pb2_grpc
from txverify.wire import TRACEPARENT_HEADER, TRACESTATE_HEADER

log = logging.getLogger(__name__)
_STATUS = {
    TxStatus.COMPLETED: common_pb2.TRANSACTION_STATUS_COMPLETED,
    TxStatus.REVERSED: common_pb2.TRANSACTION_STATUS_REVERSED,
}


def masked_transaction(tx: LedgerTransaction) -> common_pb2.Transaction:
    """The record as it may leave the bank: names, accounts and proxies masked."""
    return common_pb2.Transaction(
        trans_ref=tx.trans_ref,
        sending_bank=tx.sending_bank,
        receiving_bank=tx.receiving_bank,
        trans_time=units.to_timestamp(tx.trans_time),
        sender=_masked_party(tx.sender),
        receiver=_masked_party(tx.receiver),
        amount=units.money(tx.amount),
        paid_local_amount=units.money(tx.amount),
        trans_fee_amount=units.money(tx.fee),
        ref1=tx.ref1,
        ref2=tx.ref2,
        ref3=tx.ref3,
        to_merchant_id=tx.to_merchant_id,
        country_code=tx.country_code,
        status=_STATUS[tx.status],
    )


def _masked_party(party: PartyRecord) -> common_pb2.Party:
    masked = common_pb2.Party(
        display_name=masking.mask_name(party.name_th), name=masking.mask_name(party.name_en)
    )
    if party.account:
        masked.account.CopyFrom(
            common_pb2.Account(
                type=common_pb2.ACCOUNT_TYPE_BANKAC, value=masking.mask_account(party.account)
            )
        )
    if party.proxy_kind is not None:
        masked.proxy.CopyFrom(
            common_pb2.Proxy(
                type=common_pb2.ProxyType.Value(f"PROXY_TYPE_{party.proxy_kind.value}"),
                value=masking.mask_proxy(party.proxy_kind.value, party.proxy_value),
            )
        )
    return masked


class IssuerServicer(issuer_pb2_grpc.IssuerServiceServicer):
    """gRPC adapter over Bank.inquire, behind the bank's current faults."""

    def __init__(
        self,
        bank: Bank,
        faults: Callable[[], FaultSpec],
        *,
        only_peer: str | None = None,
        traces: deque[tuple[str, str]] | None = None,
    ) -> None:
        self.bank = bank
        self.faults = faults
        # (traceparent, tracestate or "") of each inquiry that carried a traceparent,
        # latest last (the deque's maxlen bounds it): a test reads it to see a trace arrive.
        self.traces: deque[tuple[str, str]] = deque(maxlen=100) if traces is None else traces
        # Under mTLS only the hub may ask: any member holds a certificate from
        # the same CA, and bank A must not query bank B's ledger directly.
        self.only_peer = only_peer
        self.rng = random.Random()
        # Masking is the costliest step of an answer; keep the masked form of
        # recent transactions, rebuilt whenever the status has changed.
        self._answers: OrderedDict[str, tuple[TxStatus, issuer_pb2.IssuerInquiryResponse]] = (
            OrderedDict()
        )

    def answer(self, tx: LedgerTransaction) -> issuer_pb2.IssuerInquiryResponse:
        """The masked answer about `tx`, from the cache while its status is unchanged."""
        hit = self._answers.get(tx.trans_ref)
        if hit is not None and hit[0] is tx.status:
            self._answers.move_to_end(tx.trans_ref)
            return hit[1]
        answer = issuer_pb2.IssuerInquiryResponse(transaction=masked_transaction(tx))
        self._answers[tx.trans_ref] = (tx.status, answer)
        if len(self._answers) > CACHE_SIZE:
            self._answers.popitem(last=False)
        return answer

    async def IssuerInquiry(
        self,
        request: issuer_pb2.IssuerInquiryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> issuer_pb2.IssuerInquiryResponse:
        traceparent = tracestate = ""
        for key, value in context.invocation_metadata() or ():
            if key == TRACEPARENT_HEADER and isinstance(value, str):
                traceparent = value
            elif key == TRACESTATE_HEADER and isinstance(value, str):
                tracestate = value
        if traceparent:
            self.traces.append((traceparent, tracestate))
        try:
            if self.only_peer is not None and peer_identity(context) != self.only_peer:
                raise ServiceError(
                    Reason.NOT_SUBSCRIBED, "only the hub may send inquiries to this issuer"
                )
            faults = self.faults()
            if faults.affects_answers:
                await before_inquiry(faults, self.rng)
            tx = self.bank.inquire(request.slip_ref.sending_bank, request.slip_ref.trans_ref)
        except InjectedFault as fault:
            await context.abort(fault.status, str(fault))
        except ServiceError as error:
            log.debug(
                "inquiry bank=%s outcome=%s traceparent=%s",
                self.bank.code,
                error.reason,
                traceparent,
            )
            await abort(context, error)
        return self.answer(tx)
