"""Contrastive bi-encoder training on sentence-transformers' trainer; losses are registered by name."""
