"""`SynthConfig`: every setting of `lmlab synth ...`, typed, from YAML, flags or `key=value`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lmlab.config import option


@dataclass
class SynthConfig:
    out: str = option(help="output JSONL (Alpaca fields; `lmlab train sft` reads it)", short="-o")
    n: int = option(100, "records to generate")
    seeds: Optional[str] = option(None, "Self-Instruct seed tasks (JSONL with instruction, instances)")
    data: Optional[str] = option(None, "input records (evol, filter): JSONL with instruction, input, output")
    teacher_model: Optional[str] = option(None, "teacher: bundled name (default smollm2), HF folder, or the "
                                                "model name an endpoint serves")
    teacher_url: Optional[str] = option(None, "teacher endpoint (OpenAI-compatible), e.g. http://127.0.0.1:8000/v1")
    judge_model: Optional[str] = option(None, "judge for `filter`: a model lmlab loads or the endpoint's model name")
    judge_url: Optional[str] = option(None, "judge endpoint (OpenAI-compatible)")
    threshold: float = option(4.5, "filter: keep ratings at or above this (0-5)")
    novelty: float = option(0.7, "drop an instruction whose ROUGE-L to a kept one reaches this")
    rounds: int = option(1, "evol: evolution rounds per instruction")
    batch: int = option(16, "requests per batch")
    max_tokens: int = option(256, "longest answer")
    system: Optional[str] = option(None, "magpie: a system message in the pre-query template")
    dedup: bool = option(True, "filter: drop near-duplicates (MinHash) after rating")
    seed: int = option(0, "makes a run reproducible (and a resumed run equal to an uninterrupted one)")
    overwrite: bool = option(False, "start over instead of resuming an existing output")
    progress: bool = option(True, "progress bars")
