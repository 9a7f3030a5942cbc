"""Writing an embedding store (the layout is described in :mod:`densekit.vectors.store`): the plan fixed before
the first shard, each shard's Arrow file and sidecar record (both atomic), and the manifest once all are there.

Writers are resumable and may run in parallel: a shard whose record matches the plan is complete and skipped, a
shard of another model or corpus is an error naming its file.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
    return Plan.from_json(read_json(path), path)


def read_json(path: Path) -> dict[str, Any]:
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
    info = ShardInfo.from_json(read_json(record), record)
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
