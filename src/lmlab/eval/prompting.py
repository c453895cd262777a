"""Prompting as an evaluation setting: a prompt is description + demonstrations + the item.

- few-shot: K demonstrations, drawn with a seeded random generator from the whole data file
  (never the item itself, whatever --limit keeps), or the first K of the item's group in a
  separate pool such as MMLU's dev split;
- chain of thought (--cot): demonstrations whose answers include the reasoning;
- zero-shot CoT (Kojima et al. 2022), two stages: "Let's think step by step." makes the model
  reason; a second prompt, the first plus the reasoning plus an answer trigger, extracts the
  answer;
- self-consistency (Wang et al. 2022): N sampled reasoning paths, majority vote on the answers;
- chat template: the same content as chat turns (description as system message, each
  demonstration a user/assistant pair), rendered by the model's template.

The text layout follows lm-evaluation-harness: description, then each demonstration as
text + target_delimiter + answer + fewshot_delimiter, then the item's text.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from lmlab.errors import LmlabError
from lmlab.eval.tasks import Item, Task, render

ZERO_SHOT_COT_TRIGGER = "Let's think step by step."
# Kojima et al.'s answer trigger for arithmetic (their Table 9).
ANSWER_TRIGGER = "Therefore, the answer (arabic numerals) is"


@dataclass
class PromptOptions:
    fewshot: int = 0
    seed: int = 1234  # lm-eval's default few-shot seed
    chat_template: bool = False
    cot: bool = False
    zero_shot_cot: bool = False
    self_consistency: int = 0  # N sampled paths; 0 = greedy, one path
    temperature: float = 0.7  # for self-consistency's samples

    def check(self, task: Task) -> None:
        if self.fewshot < 0:
            raise LmlabError(f"--fewshot must be >= 0, got {self.fewshot}")
        if self.self_consistency < 0:
            raise LmlabError(f"--self-consistency must be >= 0, got {self.self_consistency}")
        reasoning = self.cot or self.zero_shot_cot or self.self_consistency
        if reasoning and task.kind != "generate":
            raise LmlabError(f"--cot, --zero-shot-cot and --self-consistency apply to generative tasks; "
                             f"{task.name} is {task.kind}")
        if self.cot and self.zero_shot_cot:
            raise LmlabError("--cot (demonstrations with reasoning) and --zero-shot-cot (no demonstrations) "
                             "exclude each other")
        if self.cot and not task.cot_target:
            raise LmlabError(f"task {task.name} has no reasoning for demonstrations (cot_target)")
        if self.zero_shot_cot and self.fewshot:
            raise LmlabError("--zero-shot-cot uses no demonstrations; drop --fewshot")


class Prompter:
    """Builds each item's prompt for one task under the given options."""

    def __init__(self, task: Task, items: list[Item], options: PromptOptions, tokenizer=None,
                 pool: list[Item] | None = None):
        """pool: where demonstrations come from (default: the evaluated items)."""
        options.check(task)
        self.task, self.options, self.tokenizer = task, options, tokenizer
        self.rng = random.Random(options.seed)
        self.pool = pool if pool is not None else items
        self.separate = task.fewshot_sampler == "first_n" and pool is not None
        if options.chat_template and (tokenizer is None or not tokenizer.chat_template):
            raise LmlabError("--chat-template: this model has no chat template")
        k = options.fewshot
        if k and not self.separate and len(self.pool) <= k:
            raise LmlabError(f"--fewshot {k} needs more than {k} items to draw demonstrations from "
                             f"(the data has {len(self.pool)})")

    @property
    def delimiter(self) -> str:
        """What separates the prompt from a scored choice: a chat turn already ends the prompt."""
        return "" if self.options.chat_template else self.task.target_delimiter

    def demonstrations(self, item: Item) -> list[Item]:
        k = self.options.fewshot
        if not k:
            return []
        if self.separate:
            return [d for d in self.pool if d.record.group == item.record.group][:k]
        # As lm-eval: draw k+1 and drop the item itself, so it is never its own demonstration.
        drawn = self.rng.sample(self.pool, min(k + 1, len(self.pool)))
        return [d for d in drawn if d.record.where != item.record.where][:k]

    def answer(self, demo: Item) -> str:
        """A demonstration's answer: the right choice, or the target (with reasoning under --cot)."""
        if demo.choices is not None:
            return demo.choices[demo.gold]
        t = self.task
        source = t.cot_target if self.options.cot else (t.fewshot_target or t.target)
        return render(source, demo.fields, demo.record)

    def prompt(self, item: Item) -> str:
        """The full prompt (text, or the chat template's rendering) up to where the model answers."""
        t = self.task
        description = render(t.description, item.fields, item.record) if t.description else ""
        demos = [(d.text, self.answer(d)) for d in self.demonstrations(item)]
        trigger = ZERO_SHOT_COT_TRIGGER if self.options.zero_shot_cot else ""
        if not self.options.chat_template:
            shots = "".join(q + t.target_delimiter + a + t.fewshot_delimiter for q, a in demos)
            return description + shots + item.text + (t.target_delimiter + trigger if trigger else "")
        messages = [{"role": "system", "content": description.strip()}] if description.strip() else []
        for q, a in demos:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": item.text})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True) + trigger

    def second_stage(self, first_prompt: str, reasoning: str) -> str:
        """Zero-shot CoT's answer-extraction prompt."""
        return first_prompt + reasoning.rstrip() + "\n" + ANSWER_TRIGGER


def majority_vote(answers: list[str | None]) -> str | None:
    """The most frequent extracted answer (ties: the one seen first); None if none was found."""
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None
