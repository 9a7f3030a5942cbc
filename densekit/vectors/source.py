"""Where corpus vectors come from: an :class:`~densekit.vectors.store.EmbeddingStore` on disk, or an array in
memory (small corpora, caching off). Index builders, exact search and the miner read either through the same
few calls, so nothing downstream needs the whole matrix at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from densekit.errors import DataError


@runtime_checkable
class VectorSource(Protocol):
    """Unit vectors, one per document, in corpus order."""

    @property
    def count(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def ids(self) -> Sequence[str]: ...

    def blocks(self, max_rows: int, start: int = 0, stop: int | None = None,
               verify: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 C-contiguous block)`` over rows ``start:stop``."""
        ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The float32 vectors of ``rows``, in that order."""
        ...

    def read_all(self) -> np.ndarray: ...


class ArrayVectors:
    """A :class:`VectorSource` over an in-memory (or memory-mapped ``.npy``) array."""

    def __init__(self, array: np.ndarray, ids: Sequence[str]) -> None:
        if array.ndim != 2:
            raise DataError(f"expected a 2-d embedding matrix, got shape {array.shape}")
        if len(array) != len(ids):
            raise DataError(f"{len(array)} embeddings but {len(ids)} document ids")
        self.array, self._ids = array, ids

    @property
    def count(self) -> int:
        return len(self.array)

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    def blocks(self, max_rows: int, start: int = 0, stop: int | None = None,
               verify: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.count if stop is None else stop
        for row in range(start, stop, max(1, int(max_rows))):
            yield row, np.ascontiguousarray(self.array[row:min(stop, row + max_rows)], dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.array[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def read_all(self) -> np.ndarray:
        return np.ascontiguousarray(self.array, dtype=np.float32)


def as_source(vectors: np.ndarray | VectorSource, ids: Sequence[str] | None = None) -> VectorSource:
    """``vectors`` as a :class:`VectorSource` (an array is wrapped with ``ids``, by default row numbers)."""
    if isinstance(vectors, np.ndarray):
        return ArrayVectors(vectors, ids if ids is not None else [str(i) for i in range(len(vectors))])
    return vectors


def sample_rows(count: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct rows of ``count`` drawn with ``seed``, sorted (all rows when ``size >= count``)."""
    if size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))
