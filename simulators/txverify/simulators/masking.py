"""Masking of personal data before it leaves a bank (domain.md: 'xxx-x-x2295-x', 'ชิซูกะ ส')."""

from __future__ import annotations

MASK = "x"


def mask_account(number: str) -> str:
    """Show only 4 digits of an account number.

    A 10-digit Thai account 123-4-56789-0 becomes xxx-x-x6789-x (the slip
    format). Other lengths keep their length, show the 4 digits before the
    last one, and mask the rest.
    """
    digits = "".join(ch for ch in number if "0" <= ch <= "9")
    if len(digits) == 10:
        return f"xxx-x-x{digits[5:9]}-x"
    if len(digits) <= 5:
        return MASK * len(digits)
    return MASK * (len(digits) - 5) + digits[-5:-1] + MASK


def mask_name(full_name: str) -> str:
    """First name plus the first letter of the surname: 'CHICHUKA SAMJAI' -> 'CHICHUKA S'.

    A title before the first name ('นาย', 'MR.') is kept, as slips show it.
    Only the surname's first character is shown, never a Thai vowel or tone
    mark that sits on it.
    """
    words = full_name.split()
    if len(words) < 2:
        return words[0] if words else ""
    *given, surname = words
    return " ".join([*given, surname[0]])


def mask_proxy(kind: str, value: str) -> str:
    """Mask a PromptPay proxy value, showing at most its last 4 digits.

    MSISDN 0812345678 -> xxx-xxx-5678; NATID 1234567890123 (1-2345-67890-12-3)
    -> x-xxxx-xxxx0-12-3; e-mail keeps the first letter and the domain; other
    values keep their length and the last 4 characters.
    """
    digits = "".join(ch for ch in value if "0" <= ch <= "9")
    if kind == "MSISDN" and len(digits) == 10:
        return _keep_last(f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", 4)
    if kind == "NATID" and len(digits) == 13:
        return _keep_last(
            f"{digits[0]}-{digits[1:5]}-{digits[5:10]}-{digits[10:12]}-{digits[12]}", 4
        )
    if kind == "EMAIL" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}{MASK * max(len(local) - 1, 0)}@{domain}"
    return _keep_last(value, 4)


def _keep_last(text: str, visible: int) -> str:
    """Replace every letter or digit by MASK except the last `visible` ones; keep separators.

    A value no longer than `visible` is masked whole: showing it all would not mask it.
    """
    if sum(ch.isalnum() for ch in text) <= visible:
        return "".join(MASK if ch.isalnum() else ch for ch in text)
    out: list[str] = []
    shown = 0
    for ch in reversed(text):
        if ch.isalnum():
            out.append(ch if shown < visible else MASK)
            shown += 1
        else:
            out.append(ch)
    return "".join(reversed(out))
