"""PII: every kind redacted with its placeholder; clean text (numbers, dates, versions, years,
order numbers) left exactly as it was."""

import json

import pytest

from lmlab.data.pii import KINDS, luhn, redact

PLANTED = [
    ("Write to jane.doe+news@example.co.uk today.", "Write to <EMAIL> today.", "email"),
    ("Call +1 415-555-0132 now.", "Call <PHONE> now.", "phone"),
    ("Tel: +32 (0)2 790 75 75", "Tel: <PHONE>", "phone"),
    ("휴대폰 010-1234-5678 로 연락주세요.", "휴대폰 <PHONE> 로 연락주세요.", "phone"),
    ("서울 사무실 02-123-4567, 대표번호 1588-1234.", "서울 사무실 <PHONE>, 대표번호 <PHONE>.", "phone"),
    ("Office (415) 555-0199 or 888-459-0005.", "Office <PHONE> or <PHONE>.", "phone"),
    ("Server 192.168.10.254 and 2001:db8:85a3::8a2e:370:7334 are down.",
     "Server <IP_ADDRESS> and <IP_ADDRESS> are down.", "ip"),
    ("Visa 4111 1111 1111 1111 and Amex 3782-822463-10005.", "Visa <CREDIT_CARD> and Amex <CREDIT_CARD>.",
     "credit_card"),
    ("주민등록번호 900101-1234567 입니다.", "주민등록번호 <KR_RRN> 입니다.", "kr_rrn"),
    ("key AKIAIOSFODNN7EXAMPLE here", "key <SECRET> here", "secret"),
    ("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ok", "token <SECRET> ok", "secret"),
    ("OPENAI=sk-proj-abcdefghijklmnopqrstuvwxyz123456", "OPENAI=<SECRET>", "secret"),
    ("api_key = 'abcd1234efgh5678'.", "api_key = '<SECRET>'.", "secret"),
    ("password: hunter2hunter2", "password: <SECRET>", "secret"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "<SECRET>", "secret"),
]

CLEAN = [
    "Version 1.2.3.4.5 was released on 2023-01-05 at 10:30, priced $3.14 (save 25%).",
    "Order 1234 5678 9012 3456 shipped; tracking 9400111899223197428490.",  # fails Luhn / no issuer
    "Change year: 1896 1897 1898 1899 1900 1901 1902 1903 1904 1905",
    "The population grew from 1,234,567 to 2,345,678 between 1990 and 2000.",
    "ISBN 978-0-306-40615-7, page 12-15, room 4-101.",
    "Meet me at 5 p.m. on 12/25; the score was 3-2.",
    "서울의 인구는 약 940만 명이고, 2023년 12월 31일 기준이다.",
    "Email is a technology; the @ sign and example.com are just words here.",
    "See section 2.3.1 and figure 10.2 for the results.",
]


@pytest.mark.parametrize("text,want,kind", PLANTED)
def test_each_kind_is_redacted(text, want, kind):
    out, counts = redact(text)
    assert out == want
    assert set(counts) == {kind}


@pytest.mark.parametrize("text", CLEAN)
def test_clean_text_is_untouched(text):
    assert redact(text) == (text, {})


def test_kinds_can_be_switched_off():
    text = "jane@example.com 010-1234-5678"
    assert redact(text, ("phone",)) == ("jane@example.com <PHONE>", {"phone": 1})
    assert set(KINDS) == {"email", "phone", "ip", "credit_card", "kr_rrn", "secret"}


def test_luhn():
    assert luhn("4111111111111111") and luhn("378282246310005") and not luhn("4111111111111112")


def test_web_text_keeps_its_years_and_prices(shared_data):
    """Only contact details are touched in real pages."""
    for line in (shared_data / "webtext_sample.jsonl").open():
        text = json.loads(line)["text"]
        out, counts = redact(text)
        assert set(counts) <= {"email", "phone"}, counts
        assert "<CREDIT_CARD>" not in out
