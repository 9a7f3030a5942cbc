"""The embedding store: corpus vectors with their document ids, in Arrow shards under one manifest.

A store is a folder::

    plan.json                  what the shards belong to: model and corpus fingerprints, dtype, count, shard size
    shards/shard-00000.arrow   one Arrow IPC file per ``shard_size`` rows: ``id`` (string), ``vector``
                               (fixed-size list of float32 or float16), written atomically
    shards/shard-00000.json    that shard's record: rows, dim, bytes, sha256, model and corpus fingerprints
    manifest.json              written once every shard is there: the plan plus the shard list

Shards are read memory-mapped (Arrow IPC needs no decoding) and released after use, so streaming the
whole store through a search keeps one block of vectors in memory, whatever the corpus size. Opening a
store checks every shard's presence and size; reading a shard for a search checks its sha256 too, so a
missing, truncated, corrupted or foreign shard is an error that names the file, never a wrong answer.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from densekit.errors import DataError
from densekit.vectors.shards import (
    Manifest,
    Plan,
    ShardInfo,
    complete_shard,
    finalize,
    read_json,
    read_plan,
    sha256_of,
    write_plan,
    write_shard,
)


def write_store(folder: str | Path, plan: Plan, shards: Iterable[tuple[list[str], np.ndarray]],
                extra: dict[str, Any] | None = None) -> EmbeddingStore:
    """A complete store from ``(ids, vectors)`` shards given in order (vectors made elsewhere, e.g. synthetic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_plan(folder, plan)
    for index, (ids, vectors) in enumerate(shards):
        write_shard(folder, plan, index, ids, vectors)
    if finalize(folder, extra) is None:
        raise ValueError(f"the shards given do not cover the plan's {plan.num_shards} shards")
    return EmbeddingStore.open(folder)


@contextlib.contextmanager
def _mapped(path: Path, sha256: str | None = None) -> Iterator[pa.RecordBatch]:
    """The shard's record batch, memory-mapped (its bytes checked against ``sha256`` when given); the mapping is
    released when the block ends."""
    source = pa.memory_map(str(path))
    try:
        if sha256 is not None and sha256_of(source.read_buffer()) != sha256:
            raise DataError("checksum mismatch: the shard is corrupted (its sha256 differs from the manifest's); "
                            "delete it and rerun: only the missing shards are encoded again", path=str(path))
        try:
            batch = pa.ipc.open_file(source).get_batch(0)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Arrow shard ({exc})", path=str(path)) from None
        yield batch
    finally:
        source.close()


def _vectors_of(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column(1)
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=True).reshape(len(batch), dim)


class StoreIds(Sequence[str]):
    """The document id of every row, read on demand from the shards' memory-mapped id columns."""

    def __init__(self, store: EmbeddingStore) -> None:
        self.store = store
        self._columns: dict[int, pa.Array] = {}

    def __len__(self) -> int:
        return self.store.count

    def shard_column(self, shard: int) -> pa.Array:
        """The ids of one shard, as a memory-mapped Arrow string array."""
        column = self._columns.get(shard)
        if column is None:
            info = self.store.manifest.shards[shard]
            source = pa.memory_map(str(self.store.folder / info.file))
            column = self._columns[shard] = pa.ipc.open_file(source).get_batch(0).column(0)
            source.close()  # the mapping lives on with the column; the file descriptor does not
        return column

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = int(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        shard = self.store.shard_of(row)
        return self.shard_column(shard)[row - self.store.starts[shard]].as_py()

    def __iter__(self) -> Iterator[str]:
        for chunk in self.arrow_chunks():
            yield from chunk.to_pylist()

    def arrow_chunks(self) -> Iterator[pa.Array]:
        """The ids shard by shard, as Arrow string arrays (what an index folder's doc_ids.arrow is written from)."""
        for shard in range(len(self.store.manifest.shards)):
            yield self.shard_column(shard)


class EmbeddingStore:
    """A complete store, opened for reading (see the module docstring for the layout)."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder, self.manifest = folder, manifest
        self.starts = [s.start for s in manifest.shards]
        self._ids: StoreIds | None = None

    @classmethod
    def open(cls, folder: str | Path, model: str | None = None, corpus: str | None = None,
             count: int | None = None, dim: int | None = None, verify: bool = False) -> EmbeddingStore:
        """Open ``folder``; ``model``/``corpus``/``count``/``dim`` are what the caller expects (checked when
        given); ``verify`` checks every shard's sha256 now (otherwise each is checked when it is read)."""
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.exists():
            plan = read_plan(folder) if folder.is_dir() else None
            if plan is None:
                raise DataError("not an embedding store (no manifest.json)", path=str(folder))
            done = sum(1 for i in range(plan.num_shards) if complete_shard(folder, plan, i) is not None)
            raise DataError(f"incomplete embedding store: {done} of {plan.num_shards} shards are written; run "
                            "densekit encode again to finish it", path=str(folder))
        obj = read_json(path)
        plan = Plan.from_json(obj, path)
        try:
            shards = [ShardInfo(**s) for s in obj["shards"]]
            manifest = Manifest(plan, int(obj["dim"]), shards, obj.get("extra", {}))
        except (KeyError, TypeError) as exc:
            raise DataError(f"malformed manifest ({exc})", path=str(path)) from None
        store = cls(folder, manifest)
        store.check(model, corpus, count, dim)
        if verify:
            store.verify()
        return store

    def check(self, model: str | None = None, corpus: str | None = None, count: int | None = None,
              dim: int | None = None) -> None:
        """Every shard present with its recorded size and layout; the expectations that are given met."""
        plan, where = self.manifest.plan, str(self.folder / "manifest.json")
        if model is not None and plan.model != model:
            raise DataError(f"these vectors were encoded by another model (fingerprint {plan.model} "
                            f"{plan.model_name!r}, expected {model})", path=where)
        if corpus is not None and plan.corpus != corpus:
            raise DataError(f"these vectors belong to another corpus (fingerprint {plan.corpus}, expected {corpus})",
                            path=where)
        if count is not None and plan.count != count:
            raise DataError(f"holds {plan.count} vectors for a corpus of {count} documents", path=where)
        if dim is not None and self.dim != dim:
            raise DataError(f"holds {self.dim}-dimensional vectors but the model makes {dim}-dimensional ones",
                            path=where)
        expected_start = 0
        for i, info in enumerate(self.manifest.shards):
            path = self.folder / info.file
            if not path.exists():
                raise DataError(f"shard {i} ({info.file}) is missing", path=str(path))
            size = path.stat().st_size
            if size != info.bytes:
                raise DataError(f"shard has {size} bytes, the manifest says {info.bytes}: truncated or replaced",
                                path=str(path))
            if info.start != expected_start or info.dim != self.dim:
                raise DataError(f"shard {i} does not fit the manifest (rows from {info.start}, dim {info.dim})",
                                path=where)
            expected_start += info.count
        if expected_start != plan.count:
            raise DataError(f"the shards hold {expected_start} rows, the manifest says {plan.count}", path=where)

    def verify(self) -> None:
        for i in range(len(self.manifest.shards)):
            with self._shard(i, verify=True):
                pass

    @property
    def count(self) -> int:
        return self.manifest.plan.count

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def dtype(self) -> str:
        return self.manifest.plan.dtype

    @property
    def fingerprint(self) -> str:
        return f"{self.manifest.plan.model}-{self.manifest.plan.corpus}"

    @property
    def ids(self) -> StoreIds:
        if self._ids is None:
            self._ids = StoreIds(self)
        return self._ids

    def shard_of(self, row: int) -> int:
        return bisect.bisect_right(self.starts, row) - 1

    @contextlib.contextmanager
    def _shard(self, index: int, verify: bool = True) -> Iterator[pa.RecordBatch]:
        info = self.manifest.shards[index]
        path = self.folder / info.file
        with _mapped(path, info.sha256 if verify else None) as batch:
            size = batch.schema.field("vector").type.list_size
            if len(batch) != info.count or size != self.dim:
                raise DataError(f"shard holds {len(batch)} rows of dim {size}, the manifest says {info.count} of "
                                f"dim {self.dim}", path=str(path))
            yield batch

    def shard_vectors(self, index: int, verify: bool = True) -> np.ndarray:
        """Shard ``index`` as a float32 array (a copy: the mapping is released)."""
        with self._shard(index, verify) as batch:
            return _vectors_of(batch).astype(np.float32)

    def blocks(self, max_rows: int, start: int = 0, stop: int | None = None,
               verify: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 block)`` over rows ``start:stop``, at most ``max_rows`` rows a block, one shard
        mapped at a time; each shard's checksum is checked the first time it is read (``verify``)."""
        stop = self.count if stop is None else stop
        max_rows = max(1, int(max_rows))
        checked: set[int] = set()
        row = start
        while row < stop:
            size = min(max_rows, stop - row)
            block = np.empty((size, self.dim), dtype=np.float32)
            filled = 0
            while filled < size:
                shard = self.shard_of(row + filled)
                info = self.manifest.shards[shard]
                lo = row + filled - info.start
                hi = min(info.count, lo + size - filled)
                with self._shard(shard, verify and shard not in checked) as batch:
                    block[filled:filled + hi - lo] = _vectors_of(batch)[lo:hi]
                checked.add(shard)
                filled += hi - lo
            yield row, block
            row += size

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (any order), float32."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shards = np.searchsorted(np.asarray(self.starts), rows, side="right") - 1
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            with self._shard(int(shard), verify=False) as batch:
                out[where] = _vectors_of(batch)[rows[where] - self.starts[shard]]
        return out

    def read_all(self) -> np.ndarray:
        """Every vector in one float32 array: for callers that need the matrix itself (small corpora)."""
        out = np.empty((self.count, self.dim), dtype=np.float32)
        for start, block in self.blocks(max(1, self.count)):
            out[start:start + len(block)] = block
        return out

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.folder)!r}, count={self.count}, dim={self.dim}, dtype={self.dtype})"
