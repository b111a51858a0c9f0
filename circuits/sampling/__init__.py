"""Sampling: the one sampler, guidance strategies, and the result objects."""
