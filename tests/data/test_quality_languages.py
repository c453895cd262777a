"""The Gopher and C4 rules are English rules: other languages pass untouched."""

from lmlab.data.quality import C4Config, GopherConfig, c4, gopher


def test_rules_apply_to_english_records_only():
    korean = {"text": "오늘은 날씨가 좋다", "language": "ko"}
    english = {"text": "Too short.", "language": "en"}
    unlabelled = {"text": "Too short."}
    kept, removed = gopher([korean, english, unlabelled], GopherConfig())
    assert kept == [korean] and [why for _, why in removed] == ["gopher_short_doc"] * 2
    kept, _ = c4([korean, english], C4Config())
    assert kept == [korean]
    kept, _ = gopher([korean], GopherConfig(languages=["en", "ko"]))
    assert kept == []
