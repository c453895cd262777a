"""`EvalConfig`: every setting of `lmlab eval`, typed, from YAML, flags or `key=value`.

The CLI's flags are generated from these fields (`lmlab.config.add_flags`); `run(config)`
(lmlab.eval.runner) evaluates and writes the resolved config as DIR/config.yaml beside
results.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from lmlab.config import option
from lmlab.model.formats import CHOICES as WEIGHT_FORMATS


@dataclass
class EvalConfig:
    model: Optional[str] = option(None, "bundled name (default smollm2), HF folder, .gguf file or hub id org/name",
                                  short="-m")
    weights: str = option("auto", "inference weight format (auto is fp32 here: numbers comparable with lm-eval)",
                          choices=WEIGHT_FORMATS)
    tasks: list[str] = option(help="built-in task name or task YAML file (repeatable)", flag="--task", short="-t",
                              append=True, factory=list)
    data: Optional[str] = option(None, "data file (JSONL/JSON/CSV/Parquet/text), MMLU folder, or hf:org/name[:config]")
    split: Optional[str] = option(None, "split of a hub dataset")
    limit: Optional[int] = option(None, "evaluate the first N items (per MMLU subject)")
    output: Optional[str] = option(None, "write results.json, samples and config.yaml here", short="-o")
    fewshot: int = option(0, "K demonstrations per item")
    seed: int = option(1234, "few-shot selection and sampling seed")
    chat_template: bool = option(False, "wrap prompts in the model's chat template")
    cot: bool = option(False, "chain of thought: demonstrations with reasoning (default 8 of them)")
    zero_shot_cot: bool = option(False, "two stages: \"Let's think step by step.\", then answer extraction")
    self_consistency: int = option(0, "sample N reasoning paths and take the majority answer")
    temperature: float = option(0.7, "sampling temperature (self-consistency, humaneval --samples > 1)")
    max_new_tokens: Optional[int] = option(None, "generation limit (default: the task's)")
    format: Optional[Literal["letter", "cloze"]] = option(None, "mmlu prompt format")
    prompt_template: Optional[str] = option(None, "Jinja prompt template file")
    max_length: Optional[int] = option(None, "longest sequence scored (perplexity window), default: the model's "
                                             "context")
    samples: int = option(1, "humaneval: completions per problem")
    k: list[int] = option(help="humaneval: pass@k values, comma-separated", factory=lambda: [1])
    progress: bool = option(True, "no progress bar")
