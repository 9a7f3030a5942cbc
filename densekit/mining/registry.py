"""The mining registries: candidate retrievers (``bm25``, ``dense``, ``hybrid``, ``ivf-local``), samplers
(``top``, ``random-in-window``, ``star``) and teachers that rescore candidates
(``cross-encoder``, ``bi-encoder``)."""

from densekit.registry import Registry

RETRIEVERS: Registry = Registry("candidate retriever", "densekit.mining.retrievers")
SAMPLERS: Registry = Registry("sampler", "densekit.mining.samplers")
TEACHERS: Registry = Registry("teacher", "densekit.mining.teachers")
