"""The typed training record: one (query, positive, negatives) example with its ids and audit trail.

:class:`TrainingRecord` is what ``densekit mine`` writes (``to_json``) and every reader of training data returns
(``from_json`` for JSONL and ``datasets`` rows, :mod:`densekit.data.sentences` for text and NLI files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from densekit.errors import DataError

AUDIT_FIELDS = ("positive_teacher_score", "teacher", "teacher_disagrees", "refilled", "query_cluster", "dropped")


@dataclass
class Negative:
    """A negative and, when mined, where it came from (its audit trail)."""

    text: str
    doc_id: str | None = None
    source: str | None = None
    rank: int | None = None
    score: float | None = None
    teacher_score: float | None = None
    weight: float | None = None
    cluster: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"doc_id": self.doc_id, "text": self.text, "source": self.source, "rank": self.rank,
                               "score": self.score}
        for name in ("teacher_score", "weight", "cluster"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class TrainingRecord:
    """One (query, positive, negatives) example, with ids and the miner's audit fields when it has them."""

    query: str
    positive: str
    negatives: list[Negative] = field(default_factory=list)
    query_id: str | None = None
    positive_id: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)  # AUDIT_FIELDS the miner wrote, kept as they are
    where: str | None = None  # "file:line" it was read from, for error messages

    @property
    def negative_texts(self) -> list[str]:
        return [n.text for n in self.negatives]

    @property
    def negative_ids(self) -> list[str]:
        return [n.doc_id for n in self.negatives if n.doc_id is not None]

    @property
    def weights(self) -> list[float] | None:
        """Per-negative weights (1.0 where a negative has none), or None when no negative has one."""
        if not any(n.weight is not None for n in self.negatives):
            return None
        return [1.0 if n.weight is None else float(n.weight) for n in self.negatives]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.query_id is not None:
            out["query_id"] = self.query_id
        out["query"] = self.query
        if self.positive_id is not None:
            out["positive_id"] = self.positive_id
        out["positive"] = self.positive
        out["negatives"] = [n.to_json() for n in self.negatives]
        out.update(self.audit)
        return out

    @classmethod
    def from_json(cls, obj: dict, path: str, line: int | None) -> TrainingRecord:
        query_key = "query" if "query" in obj else "anchor" if "anchor" in obj else None
        if query_key is None:
            raise DataError("missing field (or 'anchor')", path=path, line=line, field="query")
        if "positive" not in obj:
            raise DataError("missing field", path=path, line=line, field="positive")
        raw = obj.get("negatives")
        if raw is None:
            raw = [obj[k] for k in sorted(obj, key=_column_order) if k == "negative" or k.startswith("negative_")]
        if not isinstance(raw, list):
            raise DataError("expected a list", path=path, line=line, field="negatives")
        negatives = [_negative(n, path, line, f"negatives[{i}]") for i, n in enumerate(raw)]
        record = cls(query=_text(obj[query_key], path, line, query_key),
                     positive=_text(obj["positive"], path, line, "positive"), negatives=negatives,
                     query_id=_optional_id(obj, "query_id", path, line),
                     positive_id=_optional_id(obj, "positive_id", path, line),
                     audit={k: obj[k] for k in AUDIT_FIELDS if k in obj},
                     where=f"{path}:{line}" if line is not None else path)
        return record


def _column_order(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (0, name)


def _text(value: object, path: str, line: int | None, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", path=path, line=line, field=name)
    if not value.strip():
        raise DataError("empty text", path=path, line=line, field=name)
    return value


def _optional_id(obj: dict, key: str, path: str, line: int | None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"expected a string id, got {type(value).__name__}", path=path, line=line, field=key)
    return str(value)


def _number(value: object, path: str, line: int | None, name: str, kind: type = float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"expected a number, got {type(value).__name__}", path=path, line=line, field=name)
    if kind is int and not (isinstance(value, int) or value.is_integer()):
        raise DataError(f"expected a whole number, got {value}", path=path, line=line, field=name)
    return kind(value)


def _negative(value: object, path: str, line: int | None, name: str) -> Negative:
    if isinstance(value, str):
        return Negative(_text(value, path, line, name))
    if not isinstance(value, dict):
        raise DataError(f"expected a string or an object, got {type(value).__name__}", path=path, line=line,
                        field=name)
    if "text" not in value:
        raise DataError("negative object has no 'text'", path=path, line=line, field=name)
    doc_id = value.get("doc_id")
    if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, str | int)):
        raise DataError("expected a string id", path=path, line=line, field=f"{name}.doc_id")
    source, cluster = value.get("source"), value.get("cluster")
    if source is not None and not isinstance(source, str):
        raise DataError(f"expected a string, got {type(source).__name__}", path=path, line=line,
                        field=f"{name}.source")
    if cluster is not None and (isinstance(cluster, bool) or not isinstance(cluster, int)):
        raise DataError(f"expected an integer cluster id, got {type(cluster).__name__}", path=path, line=line,
                        field=f"{name}.cluster")
    weight = _number(value.get("weight"), path, line, f"{name}.weight")
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise DataError(f"weight must be in [0, 1], got {weight}", path=path, line=line, field=f"{name}.weight")
    rank = value.get("rank")
    return Negative(text=_text(value["text"], path, line, f"{name}.text"),
                    doc_id=None if doc_id is None else str(doc_id), source=source,
                    rank=_number(rank, path, line, f"{name}.rank", int) if rank is not None else None,
                    score=_number(value.get("score"), path, line, f"{name}.score"),
                    teacher_score=_number(value.get("teacher_score"), path, line, f"{name}.teacher_score"),
                    weight=weight, cluster=cluster)
