"""A simulated bank's IssuerService: answers inquiries from its ledger, masked."""

from __future__ import annotations

import logging
import re

import grpc

from simulators import masking
from simulators.ledger import LedgerStore, LedgerTransaction, PartyRecord, TxStatus
from txverify import units
from txverify.errors import Reason, ServiceError, abort
from txverify.v1 import common_pb2, issuer_pb2, issuer_pb2_grpc

log = logging.getLogger(__name__)

_TRANS_REF = re.compile(r"^[A-Za-z0-9]{1,32}$")
# Bank-side "missing or invalid parameter" in the existing central system.
BANK_INVALID_PARAMETER = "8400"
_STATUS = {
    TxStatus.COMPLETED: common_pb2.TRANSACTION_STATUS_COMPLETED,
    TxStatus.REVERSED: common_pb2.TRANSACTION_STATUS_REVERSED,
}


class Issuer:
    """One bank's answers to slip inquiries; knows nothing of gRPC."""

    def __init__(self, bank_code: str, ledger: LedgerStore) -> None:
        self.bank_code = bank_code
        self.ledger = ledger

    def inquire(self, sending_bank: str, trans_ref: str) -> common_pb2.Transaction:
        """The masked transaction, or ServiceError SLIP_NOT_FOUND / INVALID_REQUEST."""
        if sending_bank != self.bank_code:
            raise ServiceError(
                Reason.INVALID_REQUEST,
                f"this is bank {self.bank_code}; the slip names bank {sending_bank!r}",
                code=BANK_INVALID_PARAMETER,
            )
        if not _TRANS_REF.match(trans_ref):
            raise ServiceError(
                Reason.INVALID_REQUEST,
                "transRef must be 1-32 ASCII letters and digits",
                code=BANK_INVALID_PARAMETER,
            )
        tx = self.ledger.get_transaction(trans_ref)
        if tx is None:
            raise ServiceError(
                Reason.SLIP_NOT_FOUND, f"no transaction {trans_ref} at bank {self.bank_code}"
            )
        return masked_transaction(tx)


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
    """gRPC adapter over Issuer."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def IssuerInquiry(
        self,
        request: issuer_pb2.IssuerInquiryRequest,
        context: grpc.aio.ServicerContext[
            issuer_pb2.IssuerInquiryRequest, issuer_pb2.IssuerInquiryResponse
        ],
    ) -> issuer_pb2.IssuerInquiryResponse:
        try:
            tx = self.issuer.inquire(request.slip_ref.sending_bank, request.slip_ref.trans_ref)
        except ServiceError as error:
            log.debug(
                "inquiry bank=%s request_id=%s outcome=%s",
                self.issuer.bank_code,
                request.request_id,
                error.reason,
            )
            await abort(context, error)
        return issuer_pb2.IssuerInquiryResponse(transaction=tx)
