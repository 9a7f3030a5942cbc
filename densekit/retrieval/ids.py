"""The document ids of an index's rows: ``doc_ids.json`` for small indexes, ``doc_ids.arrow`` (read memory-mapped,
no Python string per id) for big ones."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from densekit.errors import DataError


class ArrowIds(Sequence[str]):
    """Document ids in a memory-mapped Arrow file (``doc_ids.arrow``): 10M ids cost no Python objects."""

    def __init__(self, path: Path) -> None:
        source = pa.memory_map(str(path))
        self.column = pa.ipc.open_file(source).read_all().column("id")
        source.close()  # the mapping lives on with the column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            start, stop, step = row.indices(len(self))
            return self.column.slice(start, stop - start).to_pylist()[::step]
        return self.column[int(row)].as_py()

    def __iter__(self) -> Iterator[str]:
        for chunk in self.column.chunks:
            yield from chunk.to_pylist()


JSON_IDS_MAX = 200_000  # more ids than this go to doc_ids.arrow, read memory-mapped


def write_ids(folder: Path, ids: Sequence[str]) -> None:
    """``doc_ids.json`` up to ``JSON_IDS_MAX`` ids, else ``doc_ids.arrow`` (written in batches, read memory-mapped
    without a Python object per id)."""
    if len(ids) <= JSON_IDS_MAX:
        (folder / "doc_ids.json").write_text(json.dumps(list(ids), ensure_ascii=False))
        return
    schema = pa.schema([("id", pa.string())])
    with pa.OSFile(str(folder / "doc_ids.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        chunks = ids.arrow_chunks() if hasattr(ids, "arrow_chunks") else (
            pa.array(ids[start:start + 65536], pa.string()) for start in range(0, len(ids), 65536))
        for chunk in chunks:
            writer.write_batch(pa.record_batch([chunk], schema=schema))


def read_ids(folder: Path) -> Sequence[str]:
    path = folder / "doc_ids.json"
    if path.exists():
        try:
            ids = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # truncated, not UTF-8, unreadable
            raise DataError(f"not readable JSON ({exc})", path=str(path)) from None
        if not isinstance(ids, list):
            raise DataError("doc_ids.json must hold a list", path=str(path))
        return ids
    return ArrowIds(folder / "doc_ids.arrow")
