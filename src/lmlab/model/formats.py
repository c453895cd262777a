"""The inference weight formats, named once (lmlab.model.quant implements them; the CLI and the
configs offer them). No imports, so `lmlab --help` can list them without loading torch."""

FORMATS = ("fp32", "bf16", "int8", "w8a8", "int4")
DEFAULT = "fp32"
