"""The inference weight formats, named once (lmlab.model.quant implements them; the CLI and the
configs offer them). No imports, so `lmlab --help` can list them without loading torch."""

FORMATS = ("fp32", "bf16", "int8", "w8a8", "int4")
AUTO = "auto"  # the format lmlab.cpu.choice measured fastest for the workload on this CPU
DEFAULT = AUTO
CHOICES = (AUTO,) + FORMATS  # what a --weights flag or config field accepts
