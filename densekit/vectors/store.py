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
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from densekit.errors import DataError
from densekit.io import atomic_open, atomic_write_json

logger = logging.getLogger(__name__)

FORMAT = "densekit-embeddings"
FORMAT_VERSION = 1
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


@dataclass(frozen=True)
class Plan:
    """What a store folder holds, fixed before the first shard is written."""

    model: str  # model fingerprint (densekit.models.model_fingerprint)
    corpus: str  # corpus fingerprint (densekit.data.corpus.corpus_fingerprint): ids and texts, in order
    count: int
    dtype: str = "float32"
    shard_size: int = 16384
    model_name: str = ""
    bf16: bool = False

    @property
    def num_shards(self) -> int:
        return max(1, -(-self.count // self.shard_size))

    def rows(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(self.count, start + self.shard_size)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: Path) -> Plan:
        if obj.get("format") != FORMAT:
            raise DataError(f"not a densekit embedding store (format {obj.get('format')!r})", path=str(path))
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(f"written by a newer densekit (format version {obj['format_version']})", path=str(path))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def differences(self, other: Plan) -> list[str]:
        """What makes ``other`` a plan for other vectors (empty when the two agree)."""
        names = {"model": "model", "corpus": "corpus", "count": "document count", "dtype": "dtype",
                 "shard_size": "shard size", "bf16": "bf16"}
        return [f"{label} {getattr(self, key)!r} vs {getattr(other, key)!r}" for key, label in names.items()
                if getattr(self, key) != getattr(other, key)]


@dataclass(frozen=True)
class ShardInfo:
    """One shard's record (its sidecar JSON and its entry in the manifest)."""

    index: int
    file: str
    start: int
    count: int
    dim: int
    bytes: int
    sha256: str
    model: str
    corpus: str

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: Path) -> ShardInfo:
        try:
            return cls(**{k: obj[k] for k in cls.__dataclass_fields__})
        except KeyError as exc:
            raise DataError("incomplete shard record", path=str(path), field=exc.args[0]) from None


@dataclass
class Manifest:
    plan: Plan
    dim: int
    shards: list[ShardInfo]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "dim": self.dim, "extra": self.extra,
                "shards": [asdict(s) for s in self.shards]}


def sha256_of(buffer) -> str:
    digest = hashlib.sha256()
    view = memoryview(buffer).cast("B")
    for start in range(0, len(view), 1 << 26):
        digest.update(view[start:start + (1 << 26)])
    return digest.hexdigest()


def shard_schema(dim: int, dtype: str) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("vector", pa.list_(DTYPES[dtype], dim))])


def write_shard(folder: Path, plan: Plan, index: int, ids: list[str], vectors: np.ndarray) -> ShardInfo:
    """Write shard ``index`` (Arrow file, then its sidecar record; both atomic) and return its record."""
    start, stop = plan.rows(index)
    if len(ids) != stop - start or len(vectors) != len(ids):
        raise ValueError(f"shard {index} wants rows {start}-{stop}, got {len(ids)} ids and {len(vectors)} vectors")
    dim = int(vectors.shape[1])
    values = np.ascontiguousarray(vectors, dtype=np.dtype(plan.dtype)).reshape(-1)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values, type=DTYPES[plan.dtype]), dim)
    batch = pa.record_batch([pa.array(ids, type=pa.string()), column], schema=shard_schema(dim, plan.dtype))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    data = sink.getvalue()
    name = shard_name(index)
    info = ShardInfo(index=index, file=f"shards/{name}.arrow", start=start, count=len(ids), dim=dim,
                     bytes=data.size, sha256=sha256_of(data), model=plan.model, corpus=plan.corpus)
    with atomic_open(folder / info.file, "wb") as handle:
        handle.write(memoryview(data))
    atomic_write_json(folder / "shards" / f"{name}.json", asdict(info))
    return info


def read_plan(folder: Path) -> Plan | None:
    path = folder / "plan.json"
    if not path.exists():
        return None
    return Plan.from_json(_read_json(path), path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None


def complete_shard(folder: Path, plan: Plan, index: int) -> ShardInfo | None:
    """The record of shard ``index`` when it was fully written for this plan; None when it must be (re)encoded.

    A shard of another model or corpus is an error: such a folder mixes two stores."""
    record = folder / "shards" / f"{shard_name(index)}.json"
    if not record.exists():
        return None
    info = ShardInfo.from_json(_read_json(record), record)
    if (info.model, info.corpus) != (plan.model, plan.corpus):
        which = "model" if info.model != plan.model else "corpus"
        raise DataError(f"this shard was encoded from another {which} ({getattr(info, which)}) than the store's "
                        f"plan says ({getattr(plan, which)}); use another folder", path=str(record))
    data = folder / info.file
    if not data.exists() or data.stat().st_size != info.bytes:
        logger.warning("%s is missing or has the wrong size; it is encoded again", data)
        return None
    return info


def write_plan(folder: Path, plan: Plan) -> Plan:
    """Record ``plan`` in ``folder``, or check it against the one already there (a resumed or parallel run)."""
    existing = read_plan(folder)
    if existing is None:
        atomic_write_json(folder / "plan.json", plan.to_json())
        return plan
    diff = existing.differences(plan)
    if diff:
        raise DataError(f"this folder holds embeddings of other inputs ({'; '.join(diff)}); use another folder "
                        "or delete it", path=str(folder / "plan.json"))
    return existing


def finalize(folder: Path, extra: dict[str, Any] | None = None) -> Manifest | None:
    """Write ``manifest.json`` when every shard of the plan is complete; None while some are missing."""
    plan = read_plan(folder)
    if plan is None:
        raise DataError("no plan.json: not an embedding store", path=str(folder))
    infos = [complete_shard(folder, plan, i) for i in range(plan.num_shards)]
    if any(info is None for info in infos):
        return None
    dims = {info.dim for info in infos}
    if len(dims) > 1:
        odd = next(info for info in infos if info.dim != infos[0].dim)
        raise DataError(f"holds {odd.dim}-dimensional vectors, other shards {infos[0].dim}",
                        path=str(folder / odd.file))
    manifest = Manifest(plan, infos[0].dim, list(infos), extra or {})
    atomic_write_json(folder / "manifest.json", manifest.to_json())
    return manifest


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
        obj = _read_json(path)
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
