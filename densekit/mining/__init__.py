"""Hard-negative mining: candidate retrievers and samplers, registered by name."""
