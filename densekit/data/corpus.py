"""Corpora beyond RAM: a BEIR ``corpus.jsonl[.gz]`` read once into a memory-mapped Arrow file.

``open_corpus`` gives a plain dict for small corpora (fast, as before) and a :class:`DocStore` for big ones
(``stream=True``, or a corpus file over 200 MB). A DocStore is a read-only mapping ``id -> {"title", "text"}``
like the dict, so the code that reads a corpus takes either, but its texts stay on disk:

* ``docs.arrow``: the documents in corpus order (Arrow IPC, read memory-mapped, zero-copy);
* ``id_hash.npy`` / ``id_rows.npy``: the 64-bit hashes of the ids, sorted, and the row of each, so a document
  is found by id with a binary search over a memory-mapped array (its id is then compared, so a collision
  cannot return the wrong document);
* ``meta.json``: the source file (path, size, mtime), the count and the corpus fingerprint.

The conversion checks every line as :func:`densekit.data.beir.load_corpus` does (errors name file, line and
field, duplicate ids included) and is cached under ``<cache>/corpora/``, keyed by the source file's path, size
and modification time; it is built under a lock, so parallel encoders of one corpus convert it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from densekit.data.documents import doc_text, load_corpus, parse_document
from densekit.errors import DataError
from densekit.io import atomic_dir, atomic_write_json, locked, read_jsonl
from densekit.models import default_cache_dir

logger = logging.getLogger(__name__)

STREAM_BYTES = 200 * 10**6  # corpus files above this are streamed when stream="auto"
SCHEMA = pa.schema([("_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
BATCH_ROWS = 65536
REMAP_EVERY = 2048
FORMAT_VERSION = 1


def id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


class _Fingerprint:
    """sha256 over ``id<TAB>text<NUL>`` of every document in order, first 16 hex digits."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def add(self, doc_id: str, text: str) -> None:
        self.digest.update(f"{doc_id}\t{text}".encode())
        self.digest.update(b"\x00")

    def hexdigest(self) -> str:
        return self.digest.hexdigest()[:16]


def corpus_fingerprint(corpus: Mapping[str, dict[str, str]]) -> str:
    """Changes whenever an id, a text or the order changes (a DocStore knows its own without reading)."""
    if isinstance(corpus, DocStore):
        return corpus.fingerprint
    fp = _Fingerprint()
    for doc_id, doc in corpus.items():
        fp.add(doc_id, doc_text(doc))
    return fp.hexdigest()


class _LazyIds(Sequence[str]):
    def __init__(self, store: DocStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, row):  # type: ignore[override]
        if isinstance(row, slice):
            start, stop, step = row.indices(len(self))
            return self.store.id_range(start, stop)[::step]
        return self.store.id_at(int(row) + (len(self) if int(row) < 0 else 0))

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)


class _Texts(Mapping[str, str]):
    """``id -> title + text`` over a DocStore (what the server returns with ``return_text``)."""

    def __init__(self, store: DocStore) -> None:
        self.store = store

    def __getitem__(self, doc_id: str) -> str:
        return doc_text(self.store[doc_id])

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.store

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)


class DocStore(Mapping[str, dict[str, str]]):
    """A converted corpus, opened read-only (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise DataError("not a converted corpus (no meta.json)", path=str(self.folder))
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        self._reads = 0
        self._map_table()
        self._hashes = np.load(self.folder / "id_hash.npy", mmap_mode="r", allow_pickle=False)
        self._rows = np.load(self.folder / "id_rows.npy", mmap_mode="r", allow_pickle=False)
        if len(self._table) != self.meta["count"] or len(self._hashes) != len(self._table):
            raise DataError("the converted corpus is inconsistent; delete the folder to convert again",
                            path=str(self.folder))

    def _map_table(self) -> None:
        source = pa.memory_map(str(self.folder / "docs.arrow"))
        self._table = pa.ipc.open_file(source).read_all()  # zero-copy: only the batches' metadata is read
        source.close()  # the mapping lives on with the table

    @property
    def table(self) -> pa.Table:
        """The documents, memory-mapped. The mapping is renewed every ``REMAP_EVERY`` reads: the pages that random
        lookups touched (and the kernel's fault-around neighbours) then leave this process's RSS, staying in the page
        cache, so looking up millions of documents does not pin the whole file in the process."""
        self._reads += 1
        if self._reads >= REMAP_EVERY:
            self._reads = 0
            self._map_table()
        return self._table

    # --- building ----------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, source: str | Path, folder: str | Path) -> DocStore:
        """Convert ``source`` (corpus.jsonl[.gz]) into ``folder``; bad lines are DataErrors with file and line."""
        source, folder = Path(source), Path(folder)
        fp = _Fingerprint()
        hashes: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        with atomic_dir(folder) as tmp:
            with pa.OSFile(str(tmp / "docs.arrow"), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
                batch: tuple[list[str], list[str], list[str], list[int], list[int]] = ([], [], [], [], [])

                def flush() -> None:
                    ids, titles, texts, batch_hashes, batch_lines = batch
                    if ids:
                        writer.write_batch(pa.record_batch([pa.array(ids, pa.string()), pa.array(titles, pa.string()),
                                                            pa.array(texts, pa.string())], schema=SCHEMA))
                        hashes.append(np.array(batch_hashes, dtype=np.uint64))
                        lines.append(np.array(batch_lines, dtype=np.int64))
                    for column in batch:
                        column.clear()

                for lineno, obj in tqdm(read_jsonl(source), desc=f"read {source.name}", unit=" docs",
                                        mininterval=2.0):
                    doc_id, title, text = parse_document(obj, source, lineno)
                    fp.add(doc_id, doc_text({"title": title, "text": text}))
                    for column, value in zip(batch, (doc_id, title, text, id_hash(doc_id), lineno), strict=True):
                        column.append(value)
                    if len(batch[0]) == BATCH_ROWS:
                        flush()
                flush()
            all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
            if len(all_hashes) == 0:
                raise DataError("the corpus is empty", path=str(source))
            order = np.argsort(all_hashes, kind="stable")
            sorted_hashes = all_hashes[order]
            del all_hashes
            _check_duplicates(tmp / "docs.arrow", sorted_hashes, order, np.concatenate(lines), source)
            np.save(tmp / "id_hash.npy", sorted_hashes, allow_pickle=False)
            np.save(tmp / "id_rows.npy", order.astype(np.int64), allow_pickle=False)
            stat = source.stat()
            atomic_write_json(tmp / "meta.json", {
                "format_version": FORMAT_VERSION, "source": str(source.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "count": len(order), "fingerprint": fp.hexdigest()})
        return cls(folder)

    @classmethod
    def open_for(cls, source: str | Path, cache_dir: str | Path | None = None) -> DocStore:
        """The DocStore of ``source``, converting it on first use (once, under a lock)."""
        source = Path(source)
        if not source.exists():
            raise DataError("file not found", path=str(source))
        stat = source.stat()
        key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder = root / "corpora" / key
        if (folder / "meta.json").exists():
            return cls(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with locked(folder.with_suffix(".lock")):
            if (folder / "meta.json").exists():  # another process converted it while we waited
                return cls(folder)
            logger.info("converting %s into a memory-mapped corpus at %s (once)", source, folder)
            return cls.build(source, folder)

    # --- reading -----------------------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def source(self) -> str:
        return self.meta["source"]

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[str]:
        for batch in self.table.column("_id").chunks:
            yield from batch.to_pylist()

    def row_of(self, doc_id: str) -> int | None:
        """The row of ``doc_id``, or None."""
        if not isinstance(doc_id, str):
            return None
        key = np.uint64(id_hash(doc_id))
        low = int(np.searchsorted(self._hashes, key, side="left"))
        high = int(np.searchsorted(self._hashes, key, side="right"))
        for i in range(low, high):
            row = int(self._rows[i])
            if self.id_at(row) == doc_id:
                return row
        return None

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.row_of(doc_id) is not None

    def __getitem__(self, doc_id: str) -> dict[str, str]:
        row = self.row_of(doc_id)
        if row is None:
            raise KeyError(doc_id)
        return self.doc_at(row)

    def id_at(self, row: int) -> str:
        return self.table.column("_id")[row].as_py()

    def doc_at(self, row: int) -> dict[str, str]:
        table = self.table
        return {"title": table.column("title")[row].as_py(), "text": table.column("text")[row].as_py()}

    def id_range(self, start: int, stop: int) -> list[str]:
        return self.table.column("_id").slice(start, stop - start).to_pylist()

    def text_range(self, start: int, stop: int) -> list[str]:
        part = self.table.slice(start, stop - start)
        return [doc_text({"title": title, "text": text}) for title, text in
                zip(part.column("title").to_pylist(), part.column("text").to_pylist(), strict=True)]

    @property
    def id_list(self) -> Sequence[str]:
        """Every id in corpus order, read on demand."""
        return _LazyIds(self)

    def texts(self) -> Mapping[str, str]:
        """``id -> title + text``, looked up on demand."""
        return _Texts(self)

    def __repr__(self) -> str:
        return f"DocStore({self.source!r}, {len(self)} documents)"


def _check_duplicates(arrow_path: Path, sorted_hashes: np.ndarray, order: np.ndarray, lines: np.ndarray,
                      source: Path) -> None:
    """A DataError at the later line of the first duplicated id (ids that share a hash are compared)."""
    same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    if len(same) == 0:
        return
    ids = pa.ipc.open_file(pa.memory_map(str(arrow_path))).read_all().column("_id")
    found: list[tuple[int, str]] = []
    for i in same:
        first, second = int(order[i]), int(order[i + 1])
        doc_id = ids[second].as_py()
        if ids[first].as_py() == doc_id:
            found.append((int(lines[second]), doc_id))
        else:  # a hash collision: compare with the rest of the run of equal hashes too
            j = i - 1
            while j >= 0 and sorted_hashes[j] == sorted_hashes[i]:
                if ids[int(order[j])].as_py() == doc_id:
                    found.append((int(lines[second]), doc_id))
                    break
                j -= 1
    if found:
        line, doc_id = min(found)
        raise DataError(f"duplicate document id '{doc_id}'", path=str(source), line=line, field="_id")


class DictRows:
    """The row view of an in-memory corpus dict that :class:`DocStore` has natively."""

    def __init__(self, corpus: Mapping[str, dict[str, str]]) -> None:
        self.corpus = corpus
        self.id_list: list[str] = list(corpus)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.id_list)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = corpus_fingerprint(self.corpus)
        return self._fingerprint

    def id_range(self, start: int, stop: int) -> list[str]:
        return self.id_list[start:stop]

    def text_range(self, start: int, stop: int) -> list[str]:
        return [doc_text(self.corpus[d]) for d in self.id_list[start:stop]]


def corpus_rows(corpus: Mapping[str, dict[str, str]]) -> DocStore | DictRows:
    """Row access (ids and texts by position, the fingerprint) to a dict or a DocStore."""
    return corpus if isinstance(corpus, DocStore) else DictRows(corpus)


def corpus_ids(corpus: Mapping[str, dict[str, str]]) -> Sequence[str]:
    """Every id in corpus order: a list for a dict, read on demand for a DocStore."""
    return corpus.id_list if isinstance(corpus, DocStore) else list(corpus)


def should_stream(path: Path, stream: bool | None) -> bool:
    if stream is not None:
        return stream
    return path.stat().st_size > int(os.environ.get("DENSEKIT_STREAM_BYTES", STREAM_BYTES))


def open_corpus(path: str | os.PathLike, stream: bool | None = None,
                cache_dir: str | Path | None = None) -> dict[str, dict[str, str]] | DocStore:
    """A dict for a small corpus, a :class:`DocStore` for a big one (``stream``: force either way)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if should_stream(path, stream):
        return DocStore.open_for(path, cache_dir)
    return load_corpus(path)
