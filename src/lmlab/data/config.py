"""`CurateConfig`: every setting of `lmlab data curate`, typed, from a recipe YAML, flags or
`key=value` (e.g. `minhash.bands=20`, `language.languages=[en,ko]`, `gopher.enabled=false`).

With no config every step runs with its published defaults, in `DEFAULT_STEPS` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from lmlab.config import option
from lmlab.data.decontaminate import DecontaminateConfig
from lmlab.data.dedup import ExactDedupConfig, MinHashConfig
from lmlab.data.language import LanguageConfig
from lmlab.data.normalize import NormalizeConfig
from lmlab.data.pii import PIIConfig
from lmlab.data.quality import C4Config, GopherConfig
from lmlab.data.toxicity import ToxicityConfig

# Cheap filters first so the costly ones see less text; dedup after the filters that rewrite text
# (C4 drops lines); PII last, on what is kept.
DEFAULT_STEPS = ("normalize", "language", "gopher", "c4", "toxicity", "decontaminate", "exact_dedup", "minhash",
                 "pii")


@dataclass
class CurateConfig:
    inputs: list[str] = option(help="input files or folders", factory=list, flag=False)
    out: Optional[str] = option(None, "output folder: data/part-NNNNN.{jsonl,parquet}, removed/STEP.jsonl, "
                                      "report.json", short="-o")
    out_format: Literal["jsonl", "parquet"] = option("jsonl", "format of the kept records in DIR/data")
    steps: list[str] = option(help="steps to run, in order", factory=lambda: list(DEFAULT_STEPS))
    executor: Literal["local", "ray"] = option("local", "local: every core (multiprocessing); ray: Ray Data")
    workers: int = option(0, "processes (0: one per core)")
    batch_size: int = option(1000, "records per batch (a unit of work, of output and of resumption)")
    text_field: str = option("text", "the field holding the text")
    skip_bad_rows: bool = option(False, "count and skip broken lines instead of stopping at the first")
    overwrite: bool = option(False, "replace a finished run in the output folder")
    examples: int = option(5, "removed examples per step kept in the report")
    progress: bool = option(True, "no progress bar")
    normalize: NormalizeConfig = option(factory=NormalizeConfig, flag=False)
    language: LanguageConfig = option(factory=LanguageConfig, flag=False)
    gopher: GopherConfig = option(factory=GopherConfig, flag=False)
    c4: C4Config = option(factory=C4Config, flag=False)
    toxicity: ToxicityConfig = option(factory=ToxicityConfig, flag=False)
    decontaminate: DecontaminateConfig = option(factory=DecontaminateConfig, flag=False)
    exact_dedup: ExactDedupConfig = option(factory=ExactDedupConfig, flag=False)
    minhash: MinHashConfig = option(factory=MinHashConfig, flag=False)
    pii: PIIConfig = option(factory=PIIConfig, flag=False)
