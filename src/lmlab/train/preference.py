"""Preference data: comparisons of responses to one prompt, checked and tokenised.

Record formats (detected per record):
- pairs {"prompt", "chosen", "rejected", "margin"?}: prompt a string or chat messages; chosen and
  rejected strings, or message lists whose last message is the answer (when there is no prompt,
  the messages before it are the prompt);
- HH-RLHF {"chosen", "rejected"}: whole dialogues "\n\nHuman: ...\n\nAssistant: ...". The prompt is
  the longest common prefix of their turns (as TRL's `extract_prompt`), and each answer what
  follows it: assistant turns only (consecutive ones joined), since a few percent of real rows
  branch before their last turn (an "\n\nAssistant:" written inside an answer). A row that still
  gives no usable pair (no common prompt, a human turn or nothing after it) is `Unusable`:
  counted and skipped, or with `strict` an error naming file:line;
- ranked lists {"prompt", "responses", "ranks" | "scores"}: ranks a permutation of 1..n (1 = best),
  or scores (higher = better).
Every comparison becomes a `Comparison` (responses best first); `tokenize` gives a `Ranked` with a
prompt's ids shared by all of its responses, which is how the objectives compute them (once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmlab.errors import LmlabError
from lmlab.train.data import length_batches, read_records

NO_DATA = "no training data: give data (a .jsonl/.parquet file)"  # the training stages' error


@dataclass
class Comparison:
    prompt: list[dict]  # the conversation before the answers
    responses: list[str]  # best first
    scores: list[float] | None = None  # best first, when the data gives them
    margin: float = 0.0  # preference strength of a pair (Llama 2's margin)
    where: str = "record"


@dataclass
class Ranked:
    prompt: list[int]
    responses: list[list[int]]  # best first
    scores: list[float] | None = None
    margin: float = 0.0
    ref_logps: list[float] | None = None  # precomputed reference log-probs, one per response


# ---- records -> comparisons ---------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def hh_to_messages(text: str) -> list[dict]:
    """An HH-RLHF dialogue as chat messages."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("not an HH-RLHF dialogue ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


class Unusable(ValueError):
    """A well-formed record that yields no usable comparison (skipped and counted unless strict)."""


def hh_comparison(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """(prompt, chosen answer, rejected answer) of two HH-RLHF dialogues."""
    c, r = hh_to_messages(chosen), hh_to_messages(rejected)
    n = 0
    while n < min(len(c), len(r)) and c[n] == r[n]:
        n += 1
    while n and c[n - 1]["role"] == "assistant":  # answers continue a user turn
        n -= 1
    if not n:
        raise Unusable("chosen and rejected dialogues differ before their first answer: no common prompt")
    answers = []
    for name, rest in (("chosen", c[n:]), ("rejected", r[n:])):
        if any(m["role"] != "assistant" for m in rest):
            raise Unusable(f"the dialogues branch before their last answer: {name} goes on with a human turn")
        text = "\n\n".join(m["content"] for m in rest if m["content"])
        if not text.strip():
            raise Unusable(f"empty {name} answer")
        answers.append(text)
    if answers[0].strip() == answers[1].strip():
        raise Unusable("identical answers cannot be ranked (chosen == rejected)")
    return c[:n], answers[0], answers[1]


def _is_hh(value) -> bool:
    return isinstance(value, str) and value.startswith("\n\nHuman:")


def _messages(value, what: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and m.get("role") and isinstance(m.get("content"), str) for m in value):
        return value
    raise ValueError(f"{what} must be a string or a list of {{role, content}} messages")


def _split_answer(value, what: str) -> tuple[list[dict] | None, str]:
    """(messages before the answer or None, the answer) of a response field."""
    if isinstance(value, str):
        if value.startswith("\n\nHuman:"):
            msgs = hh_to_messages(value)
        else:
            return None, value
    else:
        msgs = _messages(value, what)
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"{what} must end with an assistant message")
    return msgs[:-1], msgs[-1]["content"]


def to_comparison(rec: dict) -> Comparison:
    where = rec.get("_where", "record")
    try:
        if "responses" in rec:
            return _ranked(rec, where)
        if "chosen" not in rec or "rejected" not in rec:
            keys = ", ".join(k for k in rec if k != "_where")
            raise ValueError(f"unknown preference format (keys: {keys}); expected prompt/chosen/rejected, "
                             "HH-RLHF chosen/rejected dialogues, or prompt/responses/ranks|scores")
        if "prompt" not in rec and _is_hh(rec["chosen"]) and _is_hh(rec["rejected"]):
            prompt, chosen, rejected = hh_comparison(rec["chosen"], rec["rejected"])
            return _checked(Comparison(prompt, [chosen, rejected], None, _margin(rec), where))
        before_c, chosen = _split_answer(rec["chosen"], "chosen")
        before_r, rejected = _split_answer(rec["rejected"], "rejected")
        if "prompt" in rec:
            prompt = _messages(rec["prompt"], "prompt") + (before_c or [])
            if (before_c or []) != (before_r or []):
                raise ValueError("chosen and rejected continue the prompt differently")
        else:
            if before_c is None or before_r is None:
                raise ValueError("no prompt: give 'prompt', or dialogues/messages that contain it")
            if before_c != before_r:
                raise ValueError("chosen and rejected dialogues differ before their last answer")
            prompt = before_c
        return _checked(Comparison(prompt, [chosen, rejected], None, _margin(rec), where))
    except Unusable as e:
        raise UnusableRow(f"{where}: {e}") from None
    except ValueError as e:
        raise LmlabError(f"{where}: {e}") from None


class UnusableRow(LmlabError):
    """`Unusable`, named by file:line."""


def _margin(rec: dict) -> float:
    margin = rec.get("margin", 0.0)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool):
        raise ValueError(f"margin must be a number, got {margin!r}")
    return float(margin)


def _ranked(rec: dict, where: str) -> Comparison:
    responses = rec["responses"]
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise ValueError("responses must be a list of strings")
    n = len(responses)
    if "ranks" in rec:
        ranks = rec["ranks"]
        if not isinstance(ranks, list) or sorted(ranks) != list(range(1, n + 1)):
            raise ValueError(f"ranks {ranks!r} are not a permutation of 1..{n} (1 = best)")
        order, scores = sorted(range(n), key=lambda i: ranks[i]), None
    elif "scores" in rec:
        scores = rec["scores"]
        if not isinstance(scores, list) or len(scores) != n or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            raise ValueError(f"scores must be {n} numbers, one per response")
        order = sorted(range(n), key=lambda i: -scores[i])
        scores = [float(scores[i]) for i in order]
    else:
        raise ValueError("a ranked list needs 'ranks' or 'scores'")
    prompt = _messages(rec.get("prompt"), "prompt")
    return _checked(Comparison(prompt, [responses[i] for i in order], scores, 0.0, where))


def _checked(c: Comparison) -> Comparison:
    if len(c.responses) < 2:
        raise ValueError("a comparison needs at least two responses")
    if any(not r.strip() for r in c.responses):
        raise ValueError("empty response")
    if len(set(r.strip() for r in c.responses)) < len(c.responses):
        raise ValueError("identical responses cannot be ranked (chosen == rejected)")
    return c


def read_comparisons(path, skip_bad_rows: bool = False, stats: dict | None = None,
                     strict: bool = False) -> list[Comparison]:
    """Comparisons from a data file; a bad record is an error naming file:line, or with
    skip_bad_rows a skip counted in stats["skipped_rows"]. A well-formed row that gives no usable
    pair (`Unusable`) is counted in stats["unusable_rows"] and skipped, or with strict an error."""
    stats = {} if stats is None else stats
    out = []
    for rec in read_records(path, skip_bad_rows, stats):
        try:
            out.append(to_comparison(rec))
        except UnusableRow as e:
            if strict:
                raise LmlabError(f"{e} (--strict)") from None
            _count_unusable(stats, e)
        except LmlabError:
            if not skip_bad_rows:
                raise
            stats["skipped_rows"] = stats.get("skipped_rows", 0) + 1
    _report_unusable(path, stats, len(out))
    if not out:
        raise LmlabError(f"{path}: no usable comparisons")
    return out


def _count_unusable(stats: dict, e: UnusableRow) -> None:
    stats["unusable_rows"] = stats.get("unusable_rows", 0) + 1
    stats.setdefault("first_unusable", str(e))


def _report_unusable(path, stats: dict, kept: int) -> None:
    if stats.get("unusable_rows") and not stats.get("reported"):
        stats["reported"] = True
        print(f"{path}: skipped {stats['unusable_rows']} row(s) that give no usable pair, kept {kept} "
              f"(first: {stats['first_unusable']}); --strict stops at them instead")


def read_prompts(path, skip_bad_rows: bool = False, strict: bool = False) -> list[list[dict]]:
    """Prompts (as chat messages) for RL: any preference record, or {"prompt"} / {"messages"}."""
    prompts, stats = [], {}
    for rec in read_records(path, skip_bad_rows):
        if "chosen" in rec or "responses" in rec:
            try:
                prompts.append(to_comparison(rec).prompt)
            except UnusableRow as e:
                if strict:
                    raise LmlabError(f"{e} (--strict)") from None
                _count_unusable(stats, e)
            except LmlabError:
                if not skip_bad_rows:
                    raise
            continue
        where = rec.get("_where", "record")
        msgs = rec.get("prompt", rec.get("messages"))
        try:
            msgs = _messages(msgs, "prompt")
        except ValueError as e:
            raise LmlabError(f"{where}: {e}") from None
        prompts.append(msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs)
    _report_unusable(path, stats, len(prompts))
    return prompts


def pairs(c: Comparison) -> list[Comparison]:
    """A ranked list as all its (better, worse) pairs, as InstructGPT trains on K-choose-2."""
    n = len(c.responses)
    return [Comparison(c.prompt, [c.responses[i], c.responses[j]],
                       None if c.scores is None else [c.scores[i], c.scores[j]],
                       c.margin if n == 2 else 0.0, c.where)
            for i in range(n) for j in range(i + 1, n)]


# ---- tokenising ---------------------------------------------------------------------------------

def prompt_ids(prompt: list[dict], tokenizer, chat_template: bool = True) -> list[int]:
    if chat_template and tokenizer.chat_template:
        return tokenizer.encode_chat(prompt, add_generation_prompt=True)
    return tokenizer.encode("\n\n".join(m["content"] for m in prompt) + "\n\n")


def response_ids(prompt: list[dict], response: str, tokenizer, chat_template: bool = True) -> list[int]:
    """The answer's tokens as the model writes them after the prompt, ending with its EOS, as the
    engine generates it (what a template writes after the end-of-turn token is dropped)."""
    eos = tokenizer.eos_token_id
    if chat_template and tokenizer.chat_template:
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}],
                                             add_generation_prompt=False)
        if not full.startswith(head):
            raise LmlabError("the chat template rewrites earlier turns, so answers cannot be separated "
                             "from prompts; use chat_template: false")
        ids = tokenizer.encode(full[len(head):], add_special_tokens=False)
        return ids[:ids.index(eos) + 1] if eos in ids else ids
    return tokenizer.encode(response, add_special_tokens=False) + ([eos] if eos is not None else [])


def tokenize(c: Comparison, tokenizer, max_length: int, chat_template: bool = True) -> Ranked:
    """Ids of the prompt and each response. Too long: the prompt loses its oldest tokens (down to
    half of max_length), then responses their ends, so every response keeps prompt + itself
    within max_length."""
    p = prompt_ids(c.prompt, tokenizer, chat_template)
    rs = [response_ids(c.prompt, r, tokenizer, chat_template) for r in c.responses]
    longest = max(len(r) for r in rs)
    if len(p) + longest > max_length:
        keep = max(max_length - longest, min(len(p), max_length // 2))
        p = p[len(p) - keep:]
        rs = [r[:max_length - keep] for r in rs]
    return Ranked(p, rs, c.scores, c.margin)


def tokenize_all(comparisons: list[Comparison], tokenizer, max_length: int, chat_template: bool = True,
                 as_pairs: bool = True) -> list[Ranked]:
    """Tokenised comparisons; as_pairs splits ranked lists into their pairs. Pairs that truncation
    made identical are dropped: they carry no preference."""
    if as_pairs:
        comparisons = [p for c in comparisons for p in pairs(c)]
    out = [tokenize(c, tokenizer, max_length, chat_template) for c in comparisons]
    return [r for r in out if len({tuple(x) for x in r.responses}) == len(r.responses)]


def comparison_batches(cfg, tokenizer, path: str, collate, world: int = 1, as_pairs: bool = True):
    """Tokenised comparisons (ranked lists split into pairs unless as_pairs is False), batched
    by similar length: the trainer's Batches."""
    from lmlab.train.trainer import Batches

    stats = {"reported": True}  # the run's start has reported unusable rows already
    comparisons = read_comparisons(path, cfg.skip_bad_rows, stats, cfg.strict)
    if stats.get("skipped_rows"):
        print(f"{path}: skipped {stats['skipped_rows']} bad record(s)")
    examples = tokenize_all(comparisons, tokenizer, cfg.max_length, cfg.chat_template, as_pairs)
    if not examples:
        raise LmlabError(f"{path}: no usable comparisons")
    lengths = [len(e.prompt) + sum(len(r) for r in e.responses) for e in examples]
    global_batch = cfg.batch_size * world

    def plan(epoch):
        return [b for b in length_batches(lengths, global_batch, cfg.seed, epoch) if len(b) == global_batch] \
            or [list(range(len(lengths)))]

    return Batches(examples, plan, collate)
