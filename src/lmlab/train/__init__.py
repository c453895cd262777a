"""Training: one Trainer loop; objectives (a loss over a batch) plug into it."""
