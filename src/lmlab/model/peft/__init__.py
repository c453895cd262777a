"""Parameter-efficient fine-tuning: LoRA, bottleneck adapters, prefix and prompt tuning."""
