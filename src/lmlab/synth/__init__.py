"""Synthetic instruction data: Self-Instruct, Magpie and Evol-Instruct generation, AlpaGasus-style
filtering. `run(command, config)` is what `lmlab synth COMMAND` calls."""

from __future__ import annotations

from lmlab.errors import LmlabError
from lmlab.synth.config import SynthConfig

COMMANDS = ("self-instruct", "magpie", "evol", "filter")


def teacher_for(cfg: SynthConfig):
    from lmlab.synth.teacher import Teacher

    return Teacher.from_spec(cfg.teacher_model, cfg.teacher_url, progress=cfg.progress)


def run(command: str, cfg: SynthConfig) -> dict:
    """Generate or filter into cfg.out; returns the summary (also written as OUT.summary.json)."""
    import json
    from pathlib import Path

    from lmlab.synth.records import Output, read_jsonl

    if command not in COMMANDS:
        raise LmlabError(f"unknown synth command {command!r}; choose one of {', '.join(COMMANDS)}")
    need = {"self-instruct": "seeds", "evol": "data", "filter": "data"}.get(command)
    if need and not getattr(cfg, need):
        raise LmlabError(f"synth {command} needs --{need} FILE")
    inputs = None
    if command == "self-instruct":
        from lmlab.synth.self_instruct import read_seeds

        inputs = read_seeds(cfg.seeds)  # checked before any model loads
    elif need:
        inputs = read_jsonl(cfg.data, required=("instruction", "output") if command == "filter" else ("instruction",))
        if not inputs:
            raise LmlabError(f"{cfg.data}: no records in the file")
    if command == "filter":
        summary = _filter(cfg, inputs)
    else:
        out = Output(cfg.out, overwrite=cfg.overwrite)
        try:
            teacher = teacher_for(cfg)
            if command == "self-instruct":
                from lmlab.synth import self_instruct

                summary = self_instruct.generate(teacher, inputs, cfg.n, out, batch=cfg.batch, seed=cfg.seed,
                                                 threshold=cfg.novelty, progress=cfg.progress)
            elif command == "magpie":
                from lmlab.synth import magpie

                summary = magpie.generate(teacher, cfg.n, out, batch=cfg.batch, seed=cfg.seed, threshold=cfg.novelty,
                                          system=cfg.system, max_tokens=cfg.max_tokens, progress=cfg.progress)
            else:
                from lmlab.synth import evol

                summary = evol.evolve(teacher, inputs, out, rounds=cfg.rounds, seed=cfg.seed, batch=cfg.batch,
                                      max_tokens=cfg.max_tokens, progress=cfg.progress)
        finally:
            out.close()
    Path(cfg.out + ".summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _filter(cfg: SynthConfig, records: list[dict]) -> dict:
    import json
    from pathlib import Path

    from lmlab.judge.backends import backend_from
    from lmlab.synth import alpagasus

    judge = backend_from(cfg.judge_model, cfg.judge_url, progress=cfg.progress)
    scores = alpagasus.rate(judge, records)
    kept, summary = alpagasus.select(records, scores, cfg.threshold)
    if cfg.dedup and kept:
        from lmlab.synth.dedup import near_duplicates

        drop = near_duplicates([f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in kept])
        summary["near duplicates"] = len(drop)
        kept = [r for i, r in enumerate(kept) if i not in drop]
        summary["kept"] = len(kept)
    for field in ("generator", "source"):
        if any(field in r for r in records):
            summary[f"keep rate by {field}"] = alpagasus.keep_rate_by(records, scores, cfg.threshold, field)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    return summary
