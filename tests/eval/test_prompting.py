"""Prompting options: seeded few-shot selection that never shows an item its own answer, lm-eval's
text layout, chat turns, chain-of-thought demonstrations, zero-shot CoT's two stages, the vote."""

from __future__ import annotations

import json

import pytest

from lmlab.errors import LmlabError
from lmlab.eval.data import load_records
from lmlab.eval.prompting import ANSWER_TRIGGER, PromptOptions, Prompter, majority_vote
from lmlab.eval.tasks import builtin, load_mmlu, make_items, mmlu_fewshot_pool


def _gsm8k_items(tmp_path, n=12):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}.\n#### {2 * i}"}
            for i in range(n)]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = builtin("gsm8k")
    return task, make_items(task, load_records(path))


class _ChatTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_fewshot_is_seeded_and_never_uses_the_item_itself(tmp_path):
    task, items = _gsm8k_items(tmp_path)
    demos = lambda seed: [[d.doc_id for d in Prompter(task, items, PromptOptions(fewshot=3, seed=seed))
                           .demonstrations(i)] for i in items]
    a, b, c = demos(1), demos(1), demos(2)
    assert a == b and a != c
    for item, ids in zip(items, a):
        assert len(ids) == 3 and item.doc_id not in ids and len(set(ids)) == 3


def test_fewshot_draws_beyond_the_evaluated_items_but_never_the_item(tmp_path):
    task, everything = _gsm8k_items(tmp_path, n=6)
    p = Prompter(task, everything[:1], PromptOptions(fewshot=5, seed=0), pool=everything)
    demos = p.demonstrations(everything[0])
    assert sorted(d.doc_id for d in demos) == [1, 2, 3, 4, 5]


def test_fewshot_text_layout_follows_lm_eval(tmp_path):
    task, items = _gsm8k_items(tmp_path)
    p = Prompter(task, items, PromptOptions(fewshot=2, seed=0))
    demos = p.demonstrations(items[0])
    p.rng.seed(0)  # the same draw again for the prompt
    prompt = p.prompt(items[0])
    shots = "".join(f"{d.text} {d.target}\n\n" for d in demos)
    assert prompt == shots + "Question: What is 0 plus 0?\nAnswer:"


def test_cot_demonstrations_carry_the_reasoning(tmp_path):
    task, items = _gsm8k_items(tmp_path)
    p = Prompter(task, items, PromptOptions(fewshot=1, cot=True, seed=0))
    demo = p.demonstrations(items[0])[0]
    assert p.answer(demo) == f"{demo.fields['reasoning']} The answer is {demo.target}."
    assert "<<" not in p.answer(demo)  # calculator annotations are not reasoning


def test_zero_shot_cot_two_stages(tmp_path):
    task, items = _gsm8k_items(tmp_path)
    p = Prompter(task, items, PromptOptions(zero_shot_cot=True))
    first = p.prompt(items[1])
    assert first == "Question: What is 1 plus 1?\nAnswer: Let's think step by step."
    assert p.second_stage(first, " 1 and 1 make 2.  ") == first + " 1 and 1 make 2.\n" + ANSWER_TRIGGER


def test_chat_template_puts_demonstrations_in_turns(tmp_path):
    task, items = _gsm8k_items(tmp_path)
    p = Prompter(task, items, PromptOptions(fewshot=1, chat_template=True, seed=0), _ChatTokenizer())
    demo = p.demonstrations(items[0])[0]
    p.rng.seed(0)
    assert p.prompt(items[0]) == (f"<user>{demo.text}</user><assistant>{demo.target}</assistant>"
                                  f"<user>{items[0].text}</user><assistant>")
    assert p.delimiter == ""  # a scored choice follows the assistant header directly


def test_mmlu_five_shot_takes_the_subjects_dev_examples_in_order(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
    (tmp_path / "dev" / "law_dev.csv").write_text("".join(f"Dev {i}?,a,b,c,d,A\n" for i in range(6)))
    (tmp_path / "test" / "law_test.csv").write_text("Test?,a,b,c,d,B\n")
    task = builtin("mmlu")
    items = make_items(task, load_mmlu(str(tmp_path)))
    p = Prompter(task, items, PromptOptions(fewshot=5), pool=make_items(task, mmlu_fewshot_pool(str(tmp_path))))
    prompt = p.prompt(items[0])
    assert prompt.startswith("The following are multiple choice questions (with answers) about law.\n\n"
                             "Dev 0?\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\nDev 1?")
    assert "Dev 4?" in prompt and "Dev 5?" not in prompt
    assert prompt.endswith("Test?\nA. a\nB. b\nC. c\nD. d\nAnswer:")


@pytest.mark.parametrize("options, message", [
    (PromptOptions(cot=True, zero_shot_cot=True), "exclude each other"),
    (PromptOptions(zero_shot_cot=True, fewshot=2), "drop --fewshot"),
    (PromptOptions(fewshot=-1), "--fewshot must be >= 0"),
])
def test_contradictory_options_are_errors(tmp_path, options, message):
    task, items = _gsm8k_items(tmp_path)
    with pytest.raises(LmlabError, match=message):
        Prompter(task, items, options)


def test_reasoning_options_refuse_multiple_choice_tasks(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps({"ctx": "c", "endings": ["a", "b"], "label": 0}) + "\n")
    task = builtin("hellaswag")
    with pytest.raises(LmlabError, match="apply to generative tasks"):
        Prompter(task, make_items(task, load_records(path)), PromptOptions(self_consistency=5))


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    assert majority_vote(["3", None, "5", "5", "3"]) == "3"
    assert majority_vote([None, "7", "8", "8"]) == "8"
    assert majority_vote([None, None]) is None
