"""Objectives: each a function (model, batch) -> (loss_sum, count, metrics), plus its collation.

Returning a sum and its count (tokens, pairs...) instead of a mean lets the trainer normalise
over the whole global batch, so gradient accumulation and data-parallel ranks give the same
update as one big batch.
"""
