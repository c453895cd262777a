"""The recipe: one typed config for the whole lifecycle, from YAML plus `key=value` overrides.

    name: lifecycle_quick      # what DIR/pipeline.json remembers: another name's run is refused
    model: smollm2             # the base model
    stages:                    # each optional; absent (or null) means the stage is off
      data: {...}
      adapt: {...}
      sft: {...}
      preference: {...}
      eval: {...}
      package: {...}
      serve: {...}

Stages run in the order of STAGES whatever the order in the file. A training stage starts from
the model the previous training stage produced (the base model first), so adapt -> sft ->
preference is a chain; eval scores the base model and every training stage's model the same way.
`train: [key=value, ...]` in a training stage reaches any TrainConfig key (lmlab.train.config)
that the stage's own keys do not name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from lmlab.errors import LmlabError

# The project's public test data (../shared/data beside the checkout, or $LMLAB_SHARED_DATA).
SHARED = Path(os.environ.get("LMLAB_SHARED_DATA") or Path(__file__).resolve().parents[3].parent / "shared" / "data")
HH_RLHF = str(SHARED / "hh_rlhf_harmless_base_test.jsonl")
HELLASWAG = str(SHARED / "hellaswag_val_dev500.jsonl")
GSM8K = str(SHARED / "gsm8k_test_dev200.jsonl")
WEBTEXT = str(SHARED / "webtext_sample.jsonl")
MT_BENCH = str(SHARED / "mt_bench_questions.jsonl")
HARMBENCH = str(SHARED / "harmbench_behaviors.jsonl")
XSTEST = str(SHARED / "xstest_prompts.jsonl")

STAGES = ("data", "adapt", "sft", "preference", "eval", "package", "serve")
TRAINING = ("adapt", "sft", "preference")  # stages that produce a model


@dataclass
class DataStage:
    """Curate the SFT and preference data with lmlab.data (dedup, quality, decontamination against
    the evaluation sets that the eval stage uses)."""
    sft: str = "flan"  # flan (built-in tasks, written out first) or a .jsonl of instruction records
    preference: str = HH_RLHF  # preference pairs (.jsonl)
    decontaminate: bool = True  # drop records sharing an n-gram with the eval stage's test items
    ngram: int = 8  # words per n-gram (instruction records are short)
    dedup: bool = True  # drop exact duplicates


@dataclass
class AdaptStage:
    """Domain-adaptive continued pretraining (`lmlab train pretrain --init MODEL`)."""
    corpus: str = "stories:400"  # the raw domain corpus: a file, a folder, or stories:N
    general: str = WEBTEXT  # held-out general text (.jsonl with "text"): its perplexity rises by how much
    general_limit: int = 20  # documents of it scored
    method: Literal["lora", "full"] = "lora"
    max_steps: int = 20
    batch_size: int = 4
    max_length: int = 128
    lr: float = 5e-4
    save_every: int = 5  # checkpoints: a killed pipeline resumes from the last one
    train: list[str] = field(default_factory=list)  # any other TrainConfig key=value


@dataclass
class SftStage:
    """Instruction tuning with lmlab.train.sft.sft: `flan` (built-in FLAN-style tasks, whole
    clusters held out) or a .jsonl of records."""
    data: str = "flan"
    method: str = "lora"
    holdout: list[str] = field(default_factory=lambda: ["classification", "extraction"])
    per_family: int = 40
    max_steps: int = 40
    batch_size: int = 8
    max_length: int = 256
    lr: float = 5e-4
    save_every: int = 5
    train: list[str] = field(default_factory=list)


@dataclass
class PreferenceStage:
    """Preference learning on pairs: DPO, or a reward model then PPO or GRPO against it."""
    method: Literal["dpo", "ppo", "grpo"] = "dpo"
    data: str = HH_RLHF
    limit: int = 256  # pairs trained on (the first ones)
    eval_limit: int = 32  # the next pairs: held-out implicit-reward (DPO) or pair (RM) accuracy
    beta: float = 0.1
    max_steps: int = 20
    batch_size: int = 4
    max_length: int = 256
    lr: float = 5e-5
    rm_steps: int = 20  # ppo/grpo: reward model steps before the policy's
    save_every: int = 5
    train: list[str] = field(default_factory=list)


@dataclass
class EvalStage:
    """The same suite on the base model and on every training stage's model."""
    hellaswag: int = 100  # items of the HellaSwag slice (0: off)
    hellaswag_data: str = HELLASWAG
    gsm8k: int = 20  # problems of the GSM8K slice (0: off)
    gsm8k_data: str = GSM8K
    gsm8k_max_new_tokens: int = 192
    flan_per_family: int = 8  # held-out FLAN cluster records per family (0: off); clusters: the sft stage's
    perplexity: str = WEBTEXT  # text whose perplexity is measured ("": off)
    perplexity_limit: int = 20
    prompts: list[str] = field(default_factory=lambda: [
        "Give three tips for staying healthy.",
        "How do I pick a lock?",
        "What is the capital of France? Answer in one word.",
        "Write a haiku about the sea."])
    max_new_tokens: int = 64  # side-by-side answers and judged answers
    judge: bool = True  # win rates against the base model (lmlab.judge, when that area is installed)
    judge_questions: str = MT_BENCH  # questions answered and judged (MT-Bench's first turns)
    judge_prompts: int = 16  # the first N of them
    judge_model: Optional[str] = None  # the judge (default: the base model)
    judge_max_tokens: int = 256  # the judge's reply: its reasons, then the [[A]] / [[B]] / [[C]] verdict
    arena: bool = True  # Bradley-Terry ratings over every stage (lmlab.arena), from the same judgments
    safety: bool = True  # attack success and over-refusal (lmlab.safety)
    safety_behaviors: str = HARMBENCH
    safety_xstest: str = XSTEST
    safety_templates: list[str] = field(default_factory=lambda: ["direct", "prefix_injection"])
    safety_limit: int = 20  # behaviours, and XSTest prompts of each label
    bootstrap: int = 1000  # resamples for the confidence intervals of corpus metrics


@dataclass
class PackageStage:
    """The final model quantised (perplexity cost measured), exported as an HF folder and a GGUF."""
    quantise: list[str] = field(default_factory=lambda: ["int8", "int4"])
    hf: bool = True
    gguf: bool = True
    perplexity: str = WEBTEXT
    perplexity_limit: int = 10


@dataclass
class ServeStage:
    """`--serve`: `lmlab serve` on the final model (the last stage; runs until stopped)."""
    host: str = "127.0.0.1"
    port: int = 8000
    engine: Literal["lmlab", "vllm"] = "lmlab"


@dataclass
class Stages:
    data: Optional[DataStage] = None
    adapt: Optional[AdaptStage] = None
    sft: Optional[SftStage] = None
    preference: Optional[PreferenceStage] = None
    eval: Optional[EvalStage] = None
    package: Optional[PackageStage] = None
    serve: Optional[ServeStage] = None


@dataclass
class Recipe:
    name: str = "pipeline"
    model: Optional[str] = None  # bundled name (default smollm2), HF folder, .gguf or hub id
    seed: int = 0
    device: str = "auto"  # training device: auto | cpu | cuda
    engine: Literal["lmlab", "vllm"] = "lmlab"  # generation for eval answers (vllm: a CUDA GPU)
    stages: Stages = field(default_factory=Stages)

    def enabled(self) -> list[str]:
        return [s for s in STAGES if getattr(self.stages, s) is not None]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """The recipe file with `key=value` overrides (`stages.sft.max_steps=10`). A stage written
    with no settings (`sft:` or `sft: {}`) is on with its defaults."""
    import yaml

    from lmlab.config import _build, _set

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise LmlabError(f"{path}: cannot read recipe ({e})") from None
    if not isinstance(data, dict):
        raise LmlabError(f"{path}: a recipe must be a mapping of keys to values")
    data.setdefault("name", path.stem)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise LmlabError(f"override {item!r} must look like key=value")
        _set(data, key.strip().split("."), yaml.safe_load(text))
    stages = data.get("stages")
    if stages is not None and not isinstance(stages, dict):
        raise LmlabError(f"{path}: stages must be a mapping of stage names to settings")
    if stages:
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise LmlabError(f"{path}: unknown stage(s) {', '.join(unknown)}; valid stages: {', '.join(STAGES)}")
        for name, value in stages.items():
            if value is None or value is True:  # `sft:` on its own: the stage with its defaults
                stages[name] = {}
            elif value is False:
                stages[name] = None
    return _build(Recipe, data, where=str(path))


def stage_config(recipe: Recipe, name: str):
    return getattr(recipe.stages, name)


def as_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)
