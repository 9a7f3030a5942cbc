"""Index types, one module each; every module registers a builder into ``INDEX_TYPES``."""
