"""Preference data: the formats, HH-RLHF dialogues as chat messages, bad records (an error
naming file:line, or a counted skip), and tokenisation."""

from __future__ import annotations

import json

import pytest

from lmlab.errors import LmlabError
from lmlab.train import preference as P


def _write(tmp_path, records, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_pair_with_string_prompt():
    c = P.to_comparison({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "margin": 2})
    assert c.prompt == [{"role": "user", "content": "Hi?"}]
    assert c.responses == ["Hello!", "Go away."] and c.margin == 2.0


def test_pair_of_message_lists_takes_the_prompt_from_them():
    before = [{"role": "user", "content": "Hi?"}]
    c = P.to_comparison({"chosen": before + [{"role": "assistant", "content": "Hello!"}],
                         "rejected": before + [{"role": "assistant", "content": "Bye."}]})
    assert c.prompt == before and c.responses == ["Hello!", "Bye."]


def test_hh_rlhf_dialogues_become_chat_messages():
    rec = {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6.",
           "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 7."}
    c = P.to_comparison(rec)
    assert c.prompt == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
                        {"role": "user", "content": "And 3+3?"}]
    assert c.responses == ["6.", "7."]


def test_ranked_list_by_ranks_and_by_scores_orders_best_first():
    by_rank = P.to_comparison({"prompt": "p", "responses": ["b", "a", "c"], "ranks": [2, 1, 3]})
    by_score = P.to_comparison({"prompt": "p", "responses": ["b", "a", "c"], "scores": [0.5, 0.9, -1]})
    assert by_rank.responses == by_score.responses == ["a", "b", "c"]
    assert by_score.scores == [0.9, 0.5, -1.0]
    assert [p.responses for p in P.pairs(by_rank)] == [["a", "b"], ["a", "c"], ["b", "c"]]


@pytest.mark.parametrize("record, message", [
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical responses"),
    ({"prompt": "p", "chosen": "  ", "rejected": "x"}, "empty response"),
    ({"prompt": "p", "responses": ["a", "b", "c"], "ranks": [1, 1, 2]}, "not a permutation of 1..3"),
    ({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 1]}, "not a permutation of 1..2"),
    ({"prompt": "p", "responses": ["a", "b"]}, "needs 'ranks' or 'scores'"),
    ({"question": "q"}, "unknown preference format"),
])
def test_bad_record_is_an_error_naming_file_and_line(tmp_path, record, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = _write(tmp_path, [good, record])
    with pytest.raises(LmlabError, match=rf"data.jsonl:2: .*{message}"):
        P.read_comparisons(path)


BRANCHED = {  # as real HH-RLHF rows: an "\n\nAssistant:" written inside the chosen answer
    "chosen": "\n\nHuman: Are drag queens men?\n\nAssistant: No.\n\nHuman: Isn't that drag kings?\n\nAssistant: "
              "No, kings.  Human: Then why?\n\nAssistant:  Because.",
    "rejected": "\n\nHuman: Are drag queens men?\n\nAssistant: No.\n\nHuman: Isn't that drag kings?\n\nAssistant: "
                "A drag king is the opposite."}
UNUSABLE = [
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}, "no common prompt"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
      "rejected": "\n\nHuman: a\n\nAssistant: b\n\nHuman: x\n\nAssistant: d"}, "human turn"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: ", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "empty chosen"),
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: b "}, "identical"),
]


def test_hh_rows_that_branch_before_their_last_turn_take_the_common_turns_as_prompt():
    c = P.to_comparison(BRANCHED)
    assert [m["content"] for m in c.prompt] == ["Are drag queens men?", "No.", "Isn't that drag kings?"]
    assert c.responses == ["No, kings.  Human: Then why?\n\nBecause.", "A drag king is the opposite."]


def test_unusable_hh_rows_are_counted_not_fatal_unless_strict(tmp_path):
    rows = [BRANCHED] + [r for r, _ in UNUSABLE] + [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    path = _write(tmp_path, rows)
    stats = {}
    out = P.read_comparisons(path, stats=stats)
    assert len(out) == 2 and stats["unusable_rows"] == len(UNUSABLE) and not stats.get("skipped_rows")
    for row, message in UNUSABLE:
        with pytest.raises(LmlabError, match=rf"one.jsonl:2: .*{message}.*--strict"):
            P.read_comparisons(_write(tmp_path, [BRANCHED, row], "one.jsonl"), strict=True)
    assert len(P.read_prompts(path)) == 2


def test_hh_prompts_match_trls_extract_prompt_on_real_rows(shared_data):
    """Every row of HH-RLHF's harmless-base test split: our prompt is TRL's, and the answers are
    what TRL leaves after it; the rows we cannot use are few and counted."""
    data_utils = pytest.importorskip("trl.data_utils")
    path = shared_data / "hh_rlhf_harmless_base_test.jsonl"
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
    stats = {}
    got = P.read_comparisons(path, stats=stats)
    assert len(got) + stats["unusable_rows"] == len(rows) and stats["unusable_rows"] < 0.01 * len(rows)
    branched = 0
    for c in got:
        row = rows[int(c.where.rsplit(":", 1)[1]) - 1]
        ref = data_utils.extract_prompt({"chosen": P.hh_to_messages(row["chosen"]),
                                         "rejected": P.hh_to_messages(row["rejected"])})
        assert c.prompt == ref["prompt"], c.where
        assert c.responses == ["\n\n".join(m["content"] for m in ref[k]) for k in ("chosen", "rejected")], c.where
        branched += max(len(ref["chosen"]), len(ref["rejected"])) > 1
    assert branched >= 4  # the rows refused before: dialogues that branch before their last turn


def test_skip_bad_rows_counts_what_it_skips(tmp_path):
    records = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "x", "rejected": "x"},
               {"prompt": "p", "responses": ["a", "b"], "ranks": [2, 2]}]
    path = _write(tmp_path, records)
    (tmp_path / "data.jsonl").write_text(path.read_text() + "{not json\n")
    stats = {}
    out = P.read_comparisons(path, skip_bad_rows=True, stats=stats)
    assert len(out) == 1 and stats["skipped_rows"] == 3


class _Chars:
    """A tokenizer with one id per character and a ChatML-like template, enough for tokenize()."""
    eos_token_id = 1
    chat_template = "chatml"

    def apply_chat_template(self, messages, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}|" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "\n")

    def encode(self, text, add_special_tokens=True):
        return [1 if ch == "|" else ord(ch) for ch in text]

    def encode_chat(self, messages, add_generation_prompt=True):
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))


def test_responses_end_at_the_end_of_turn_token_as_the_engine_generates_them():
    c = P.Comparison([{"role": "user", "content": "hi"}], ["yes", "no"])
    r = P.tokenize(c, _Chars(), max_length=100)
    assert r.prompt == _Chars().encode("<user>hi|<assistant>")
    assert r.responses == [[ord("y"), ord("e"), ord("s"), 1], [ord("n"), ord("o"), 1]]


def test_truncation_cuts_the_oldest_prompt_tokens_first():
    c = P.Comparison([{"role": "user", "content": "x" * 40}], ["yes", "no"])
    r = P.tokenize(c, _Chars(), max_length=30)
    assert all(len(r.prompt) + len(x) <= 30 for x in r.responses)
    assert r.prompt[-11:] == _Chars().encode("|<assistant>")[-11:]  # the end of the prompt survives
    assert r.responses[0] == [ord("y"), ord("e"), ord("s"), 1]


def test_read_prompts_from_preference_records_and_plain_prompts(tmp_path):
    path = _write(tmp_path, [{"prompt": "a", "chosen": "x", "rejected": "y"}, {"prompt": "b"},
                             {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "z"}]}])
    assert [p[-1]["content"] for p in P.read_prompts(path)] == ["a", "b", "c"]


def test_generated_preferences_are_valid_and_deterministic():
    from lmlab.train.prefgen import make_preferences

    recs = make_preferences(30, seed=3)
    assert recs == make_preferences(30, seed=3)
    assert {r["kind"] for r in recs} == {"arithmetic", "safety", "concise"}
    assert len([P.to_comparison(r) for r in recs]) == 30
    ranked = [P.to_comparison(r) for r in make_preferences(6, seed=3, ranked=True)]
    assert len(ranked[0].responses) == 3 and ranked[0].scores == [2.0, 1.0, 0.0]
