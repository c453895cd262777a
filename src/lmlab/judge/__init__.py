"""LLM-as-judge: backends (local model or endpoint), MT-Bench grading, G-Eval, bias report, win rates."""
