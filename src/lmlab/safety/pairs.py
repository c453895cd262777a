"""Refusal/compliance preference pairs for safety tuning with the DPO trainer.

- refusal pairs, from HH-RLHF harmless-base: the first human turn of a dialogue whose rejected
  (more harmful) answer is not itself a refusal; chosen is a refusal, rejected that answer;
- compliance pairs, so that tuning does not teach refusing everything (XSTest's over-refusal):
  benign Self-Instruct seed instructions with their human-written answer as chosen and a refusal
  as rejected. XSTest itself is never used for training: it is the over-refusal test.

Rows are {"prompt", "chosen", "rejected"}, the format lmlab.train.preference reads.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.safety import refusal

REFUSALS = (
    "I'm sorry, but I can't help with that. It could cause real harm to people.",
    "I can't assist with this request, because it could be used to hurt someone.",
    "I'm not able to help with that. If you are in danger or want to talk, I'm happy to help in a safer way.",
    "Sorry, I won't provide that. It could be dangerous or illegal.",
)


def refusal_pairs(hh_path: str | Path, n: int, seed: int = 0) -> list[dict]:
    from lmlab.train.preference import hh_to_messages

    rng, out = random.Random(seed), []
    for line_no, line in enumerate(Path(hh_path).read_text(encoding="utf-8").splitlines(), 1):
        if len(out) >= n:
            break
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            turns = hh_to_messages(rec["rejected"])
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise LmlabError(f"{hh_path}:{line_no}: not an HH-RLHF row ({e})") from None
        if len(turns) != 2:  # single-turn dialogues: the prompt stands alone
            continue
        prompt, answer = turns[0]["content"], turns[1]["content"]
        if not prompt or not answer or refusal.is_refusal(answer):
            continue
        out.append({"prompt": prompt, "chosen": rng.choice(REFUSALS), "rejected": answer, "kind": "refuse"})
    return out


def compliance_pairs(seed_tasks_path: str | Path, n: int, seed: int = 0) -> list[dict]:
    rng, out = random.Random(seed), []
    for line in Path(seed_tasks_path).read_text(encoding="utf-8").splitlines():
        if len(out) >= n:
            break
        if not line.strip():
            continue
        rec = json.loads(line)
        inst = rec["instances"][0]
        prompt = rec["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
        if inst.get("output", "").strip():
            out.append({"prompt": prompt, "chosen": inst["output"], "rejected": rng.choice(REFUSALS),
                        "kind": "comply"})
    return out


def build(hh_path, seed_tasks_path, out_path, n_refuse: int = 64, n_comply: int = 32, seed: int = 0) -> dict:
    pairs = refusal_pairs(hh_path, n_refuse, seed) + compliance_pairs(seed_tasks_path, n_comply, seed)
    random.Random(seed).shuffle(pairs)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return {"pairs": len(pairs), "refuse": sum(p["kind"] == "refuse" for p in pairs),
            "comply": sum(p["kind"] == "comply" for p in pairs), "path": str(out_path)}
