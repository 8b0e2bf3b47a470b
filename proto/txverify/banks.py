"""Bank of Thailand FI codes of PromptPay members (domain.md); 005 is a closed bank."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bank:
    """A financial institution by its FI code."""

    code: str
    short_name: str
    name: str


BANKS: dict[str, Bank] = {
    b.code: b
    for b in (
        Bank("002", "BBL", "Bangkok Bank"),
        Bank("004", "KBANK", "Kasikornbank"),
        Bank("006", "KTB", "Krungthai Bank"),
        Bank("011", "TTB", "TMBThanachart Bank"),
        Bank("014", "SCB", "Siam Commercial Bank"),
        Bank("017", "CITI", "Citibank"),
        Bank("020", "SCBT", "Standard Chartered Bank (Thai)"),
        Bank("022", "CIMBT", "CIMB Thai Bank"),
        Bank("024", "UOBT", "United Overseas Bank (Thai)"),
        Bank("025", "BAY", "Bank of Ayudhya (Krungsri)"),
        Bank("030", "GSB", "Government Savings Bank"),
        Bank("033", "GHB", "Government Housing Bank"),
        Bank("034", "BAAC", "Bank for Agriculture and Agricultural Cooperatives"),
        Bank("035", "EXIM", "Export-Import Bank of Thailand"),
        Bank("066", "IBANK", "Islamic Bank of Thailand"),
        Bank("067", "TISCO", "TISCO Bank"),
        Bank("069", "KKP", "Kiatnakin Phatra Bank"),
        Bank("070", "ICBCT", "Industrial and Commercial Bank of China (Thai)"),
        Bank("071", "TCRB", "Thai Credit Bank"),
        Bank("073", "LHFG", "Land and Houses Bank"),
        Bank("098", "SME", "SME Development Bank"),
    )
}


def is_member_code(code: str) -> bool:
    """A member code is 3 ASCII digits (str.isdigit would also take Thai digits)."""
    return len(code) == 3 and all("0" <= ch <= "9" for ch in code)


def bank_label(code: str) -> str:
    """'014 SCB' for a known code, the code alone otherwise."""
    bank = BANKS.get(code)
    return f"{code} {bank.short_name}" if bank else code
