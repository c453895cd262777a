"""Safety and provenance: jailbreak and over-refusal evaluation (evaluate, jailbreaks, refusal,
strongreject), safety-tuning pairs (pairs), machine-text detection (detect) and the green-list
watermark (watermark; applied by the engine as SamplingParams.watermark)."""
