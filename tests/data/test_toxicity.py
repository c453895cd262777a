"""Toxicity: per-language word lists (whole words; substrings for Korean), optional classifier."""

import pytest

from lmlab.data.toxicity import ToxicityConfig, hits, languages, toxicity


def test_whole_words_in_english_substrings_in_korean():
    assert hits("What the fuck is this shit?") == ["fuck", "shit"]
    assert hits("Scunthorpe and Essex are towns; a cocktail, a shitake.") == []
    assert hits("이 씨발놈아 꺼져", "ko") == ["씨발"]
    assert hits("씨앗을 심었다", "ko") == []
    assert {"en", "ko"} <= set(languages())


def test_step_uses_the_record_language_and_max_hits():
    batch = [{"text": "A calm day at the park."}, {"text": "You are a fucking idiot."},
             {"text": "병신 같은 소리", "language": "ko"}]
    kept, removed = toxicity(batch, ToxicityConfig())
    assert [r["text"] for r in kept] == ["A calm day at the park."]
    assert [why.split(":")[0] for _, why in removed] == ["1 listed word(s) (en)", "1 listed word(s) (ko)"]
    kept, _ = toxicity(batch, ToxicityConfig(max_hits=1))
    assert len(kept) == 3


def test_own_word_lists(tmp_path):
    (tmp_path / "en.txt").write_text("# mine\nbanana\n", encoding="utf-8")
    kept, removed = toxicity([{"text": "A banana split."}, {"text": "fuck"}], ToxicityConfig(wordlists=str(tmp_path)))
    assert [r["text"] for r in kept] == ["fuck"] and len(removed) == 1


def test_offline_classifier():
    pytest.importorskip("profanity_check")
    batch = [{"text": "Have a wonderful day, thank you for the help."},
             {"text": "you are a stupid worthless piece of garbage, idiot"}]
    kept, removed = toxicity(batch, ToxicityConfig(classifier="profanity_check"))
    assert [r["text"] for r in kept] == [batch[0]["text"]]
    assert removed[0][1].startswith("profanity_check")
