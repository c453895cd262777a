"""Evol-Instruct (Xu et al., 2023, WizardLM): rewrite instructions into harder (in depth) or rarer
(in breadth) ones, then drop failed evolutions by the paper's elimination rules:
  1. no information gain over the original (here: ROUGE-L against it of 0.9 or more, a
     deterministic stand-in for the paper's ChatGPT equality check);
  2. the evolved instruction is hard to answer: the answer contains "sorry" and is under 80 words;
  3. the answer holds only punctuation and stop words;
  4. the evolved instruction copies words of the evolving prompt ("#Rewritten Prompt#", "given prompt").
"""

from __future__ import annotations

import random

from lmlab.synth.novelty import rouge_l, tokens
from lmlab.synth.records import Output

_DEPTH = ("I want you act as a Prompt Rewriter.\nYour objective is to rewrite a given prompt into a more complex "
          "version to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle.\nBut the "
          "rewritten prompt must be reasonable and must be understood and responded by humans.\nYou SHOULD "
          "complicate the given prompt using the following method:\n{method}\nYou should try your best not to "
          "make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into "
          "#The Given Prompt#.\n\n#The Given Prompt#:\n{instruction}\n#Rewritten Prompt#:\n")
DEPTH_METHODS = {
    "constraints": "Please add one more constraints/requirements into #The Given Prompt#.",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry "
              "can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it "
                 "to explicitly request multiple-step reasoning.",
}
_BREADTH = ("I want you act as a Prompt Creator.\nYour goal is to draw inspiration from the #Given Prompt# to create "
            "a brand new prompt.\nThis new prompt should belong to the same domain as the #Given Prompt# but be "
            "even more rare.\nThe LENGTH and complexity of the #Created Prompt# should be similar to that of the "
            "#Given Prompt#.\nThe #Created Prompt# must be reasonable and must be understood and responded by "
            "humans.\n\n#Given Prompt#:\n{instruction}\n#Created Prompt#:\n")
STOP_WORDS = frozenset("a an the and or but of to in on at for with is are was were be been it this that as by "
                       "from i you he she we they".split())
_LEAKS = ("#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#", "given prompt",
          "rewritten prompt", "created prompt")


def evolution_prompt(instruction: str, kind: str) -> str:
    if kind == "breadth":
        return _BREADTH.format(instruction=instruction)
    return _DEPTH.format(method=DEPTH_METHODS[kind], instruction=instruction)


def why_eliminated(original: str, evolved: str, answer: str) -> str | None:
    e = evolved.strip()
    if not e:
        return "empty evolution"
    if rouge_l(tokens(original), tokens(e)) >= 0.9:
        return "no information gain"
    if "sorry" in answer.lower() and len(answer.split()) < 80:
        return "hard to answer"
    if not [t for t in tokens(answer) if t not in STOP_WORDS]:
        return "answer is only punctuation and stop words"
    if any(leak in e.lower() for leak in _LEAKS):
        return "copies the evolving prompt"
    return None


def evolve(teacher, records: list[dict], out: Output, *, rounds: int = 1, seed: int = 0, batch: int = 16,
           max_tokens: int = 256, progress: bool = True) -> dict:
    """Each record's instruction evolved `rounds` times (a random kind each time); every surviving
    evolution is written with its answer."""
    from tqdm import tqdm

    done = {(r.get("evolved_from"), r.get("evol_round")) for r in out.records}
    dropped: dict[str, int] = dict(out.state.get("dropped", {}))
    kinds = list(DEPTH_METHODS) + ["breadth"]
    current = [r["instruction"] for r in records]
    bar = tqdm(total=rounds * len(records), desc="evol", unit="rec", disable=not progress)
    for k in range(rounds):
        # a resumed run continues from the evolutions it already wrote
        latest = {r["evolved_from"]: r["instruction"] for r in out.records if r.get("evol_round") == k - 1}
        current = [latest.get(r["instruction"], c) for r, c in zip(records, current)]
        rng = random.Random(f"{seed}-{k}")
        chosen = [rng.choice(kinds) for _ in current]
        nxt = list(current)
        for b in range(0, len(current), batch):
            idx = [i for i in range(b, min(b + batch, len(current))) if (records[i]["instruction"], k) not in done]
            if not idx:
                bar.update(min(batch, len(current) - b))
                continue
            evolved = [e.strip().split("\n\n")[0] for e in teacher.chat(
                [[{"role": "user", "content": evolution_prompt(current[i], chosen[i])}] for i in idx],
                max_tokens=128, temperature=0.7, seed=seed + k)]
            answers = teacher.chat([[{"role": "user", "content": e}] for e in evolved], max_tokens=max_tokens,
                                   temperature=0.0)
            for i, e, a in zip(idx, evolved, answers):
                why = why_eliminated(current[i], e, a)
                if why:
                    dropped[why] = dropped.get(why, 0) + 1
                else:
                    out.write({"instruction": e, "input": "", "output": a.strip(), "source": f"evol-{chosen[i]}",
                               "evolved_from": records[i]["instruction"], "evol_round": k})
                    nxt[i] = e
            bar.update(len(range(b, min(b + batch, len(current)))))
            out.end_round(dropped=dropped)
        current = nxt
    bar.close()
    return {"evolved": rounds * len(records), "kept": len(out.records),
            **{f"dropped: {k}": v for k, v in sorted(dropped.items())}}
