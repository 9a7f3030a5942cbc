"""Samplers pick negatives from a ranked candidate list (positives already removed)."""
