"""PII redaction: personal data replaced with typed placeholders.

Kinds and placeholders: e-mail addresses <EMAIL>, phone numbers <PHONE> (international
"+CC ..." numbers, North American and Korean formats such as 010-1234-5678 and 02-123-4567),
IPv4 and IPv6 addresses <IP_ADDRESS>, card numbers <CREDIT_CARD> (13-19 digits with an issuer
prefix that pass the Luhn check, so order numbers and lists of years are left alone), Korean resident registration numbers <KR_RRN>
(YYMMDD-GNNNNNN with a valid date and gender digit), and secrets <SECRET>: API keys of known
shapes (AWS, GitHub, OpenAI, Slack, Google, Stripe, JWTs, private-key blocks) and values assigned
to key/token/password/secret names. Public and reserved IP addresses are not told apart: an IP
is personal data under the GDPR either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmlab.config import option

KINDS = ("email", "phone", "ip", "credit_card", "kr_rrn", "secret")


@dataclass
class PIIConfig:
    enabled: bool = option(True, "redact personal data with typed placeholders")
    kinds: list[str] = option(help="kinds to redact", factory=lambda: list(KINDS))


EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
SECRETS = re.compile("|".join([
    r"-----BEGIN (?:RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY(?: BLOCK)?-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b",  # OpenAI / Anthropic
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",  # Slack
    r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API key
    r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\b",  # Stripe
    r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b",  # JWT
]))
# key = value where the name says it is secret; only the value is replaced
ASSIGNED_SECRET = re.compile(
    r"(?i)\b((?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|auth[_-]?token|access[_-]?token|token|"
    r"password|passwd|pwd|client[_-]?secret)\s*[:=]\s*[\"']?)([^\s\"',;]{7,}[^\s\"',;.])")
KR_RRN = re.compile(r"(?<!\d)(\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\s?-\s?([1-8])\d{6}(?!\d)")
CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
PHONE = re.compile("|".join([
    r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\d)",  # +CC international
    r"(?<!\d)01[016789][ .-]?\d{3,4}[ .-]?\d{4}(?!\d)",  # Korean mobile
    r"(?<!\d)0(?:2|[3-6][1-5]|70)[ .-]?\d{3,4}[ .-]?\d{4}(?!\d)",  # Korean landline / 070
    r"(?<!\d)1[568]\d{2}-\d{4}(?!\d)",  # Korean 1588-xxxx
    r"(?<![\d-])\(\d{3}\)\s?\d{3}[ .-]\d{4}(?!\d)|(?<![\d-])\d{3}[.-]\d{3}[.-]\d{4}(?!\d)",  # North American
]))
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.]|\.\d)")
IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![:\w])|"
                  r"(?<![:\w])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}(?![:\w])")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay): without them a list
# of years ("1896 1897 1898 1899") passes Luhn one time in ten.
ISSUER = re.compile(r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|5|4[4-9]|2)|35|3(?:0[0-5]|[68]))")


def _card(m: re.Match) -> str:
    digits = re.sub(r"[ -]", "", m.group())
    ok = 13 <= len(digits) <= 19 and ISSUER.match(digits) and luhn(digits)
    return "<CREDIT_CARD>" if ok else m.group()


def redact(text: str, kinds=KINDS) -> tuple[str, dict[str, int]]:
    """(text with placeholders, {kind: count}). Secrets first, so a key is not taken for a phone."""
    counts: dict[str, int] = {}

    def sub(kind, pattern, repl, t):
        out, n = pattern.subn(repl, t)
        if kind == "credit_card":  # candidates that fail Luhn were put back unchanged
            n = out.count("<CREDIT_CARD>") - t.count("<CREDIT_CARD>")
        if n:
            counts[kind] = counts.get(kind, 0) + n
        return out

    if "secret" in kinds:
        text = sub("secret", SECRETS, "<SECRET>", text)
        text = sub("secret", ASSIGNED_SECRET, lambda m: m.group(1) + "<SECRET>", text)
    if "email" in kinds:
        text = sub("email", EMAIL, "<EMAIL>", text)
    if "kr_rrn" in kinds:
        text = sub("kr_rrn", KR_RRN, "<KR_RRN>", text)
    if "credit_card" in kinds:
        text = sub("credit_card", CARD, _card, text)
    if "ip" in kinds:
        text = sub("ip", IPV4, "<IP_ADDRESS>", text)
        text = sub("ip", IPV6, "<IP_ADDRESS>", text)
    if "phone" in kinds:
        text = sub("phone", PHONE, "<PHONE>", text)
    return text, counts


def pii(batch: list[dict], cfg: PIIConfig):
    """Redaction keeps every record; counts go to the report through "_pii"."""
    out = []
    for r in batch:
        text, counts = redact(r["text"], cfg.kinds)
        out.append({**r, "text": text, "_pii": counts} if counts else r)
    return out, []
