"""One BEIR corpus line: its fields checked, and the text a model sees (shared by the dict and streamed readers)."""

from __future__ import annotations

import os
from pathlib import Path

from densekit.errors import DataError
from densekit.io import read_jsonl

Corpus = dict[str, dict[str, str]]


def doc_text(doc: dict[str, str]) -> str:
    """The text a model sees for a document: title and body, as BEIR and MTEB join them."""
    title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
    return f"{title} {text}".strip() if title else text


def require_str(obj: dict, key: str, path: Path, lineno: int, allow_empty: bool = False) -> str:
    if key not in obj:
        raise DataError("missing field", path=str(path), line=lineno, field=key)
    value = obj[key]
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "_id":
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", path=str(path), line=lineno, field=key)
    if not allow_empty and not value.strip():
        raise DataError("empty value", path=str(path), line=lineno, field=key)
    return value


def parse_document(obj: dict, path: Path, lineno: int) -> tuple[str, str, str]:
    """``(id, title, text)`` of one corpus line, checked field by field."""
    doc_id = require_str(obj, "_id", path, lineno)
    text = require_str(obj, "text", path, lineno, allow_empty=True)
    title = obj.get("title", "") or ""
    if not isinstance(title, str):
        raise DataError("expected a string", path=str(path), line=lineno, field="title")
    if not text.strip() and not title.strip():
        raise DataError("document has an empty text and no title", path=str(path), line=lineno, field="text")
    return doc_id, title, text


def load_corpus(path: str | os.PathLike) -> Corpus:
    """The whole corpus as a dict (see :func:`densekit.data.corpus.open_corpus` for corpora beyond RAM)."""
    path = Path(path)
    corpus: Corpus = {}
    for lineno, obj in read_jsonl(path):
        doc_id, title, text = parse_document(obj, path, lineno)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", path=str(path), line=lineno, field="_id")
        corpus[doc_id] = {"title": title, "text": text}
    if not corpus:
        raise DataError("the corpus is empty", path=str(path))
    return corpus
