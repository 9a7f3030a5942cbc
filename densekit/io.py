"""Atomic file writes and line-aware JSONL reading.

Every output densekit writes goes through a temporary file in the same folder followed by
``os.replace``, so an interrupted job never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from densekit.errors import DataError, OutputError

_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
# errors that mean "this output cannot be written here", whatever line of the writing code raised them
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _output_error(exc: OSError, path: Path, what: str = "cannot write",
                  after: str = "; nothing under this name was changed") -> OutputError:
    return OutputError(f"{what} ({exc.strerror or exc}){after}", path=str(path))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success rename it over ``path``.

    A write that fails (disk full, read-only folder, file size limit) is an :class:`OutputError` naming ``path``;
    the temporary file is removed and whatever ``path`` held before is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any other output
    except OSError as exc:
        raise _output_error(exc, path) from None
    binary = "b" in mode
    try:
        ours = False  # an OSError raised by the caller's block is the caller's, unless it is a write failure
        with open(tmp, mode, encoding=None if binary else encoding) as handle:
            yield handle
            ours = True
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if ours or exc.errno in WRITE_ERRNOS:
            raise _output_error(exc, path) from None
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ensure_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check a file can be created in it, before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".densekit-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _output_error(exc, folder, f"cannot write to this {what}", after="") from None
    return folder


def raise_if_disk_full(exc: BaseException, folder: str | os.PathLike) -> None:
    """Re-raise ``exc`` as an OutputError naming ``folder`` when the disk it lives on is (nearly) full: libraries
    that save through their own writers (torch.save, safetensors, FAISS) report a full disk as a RuntimeError such
    as "unexpected pos 8768 vs 8660", which says nothing of the cause."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return
    if usage.free < max(16 << 20, usage.total // 50) or getattr(exc, "errno", None) in WRITE_ERRNOS:
        raise OutputError(f"cannot write: the disk is full ({usage.free} bytes free of {usage.total}) - {exc}; "
                          "free space and rerun the same command", path=str(folder)) from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Any) -> int:
    count = 0
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name; it replaces ``path`` only when the block succeeds.

    A write failure (disk full, read-only folder) inside the block is an :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise _output_error(exc, path) from None
    try:
        ours = False
        yield tmp
        ours = True
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if ours or exc.errno in WRITE_ERRNOS:
            raise _output_error(exc, path) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: one process at a time."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a text file, transparently un-gzipping ``*.gz``."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except OSError as exc:  # a folder, no permission, ...
        raise DataError(f"cannot open file ({exc.strerror or exc})", path=str(path)) from None


def decode_line(raw: bytes, path: str | os.PathLike, lineno: int) -> str:
    """One line of a UTF-8 file (a BOM on the first line is dropped); bad bytes are a DataError with the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 (byte {exc.start + 1} of the line: {exc.reason})", path=str(path),
                        line=lineno) from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot open file ({exc.strerror or exc})", path=str(path)) from None


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for every line of a UTF-8 text file (``*.gz`` un-gzipped); any decoding or
    reading failure is a DataError naming the file and the line."""
    path = Path(path)
    lineno = 0
    with _open_binary(path) as handle:
        try:
            for raw in handle:
                lineno += 1
                yield lineno, decode_line(raw, path, lineno)
        except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt gzip stream, an I/O error
            raise DataError(f"cannot read file ({exc})", path=str(path), line=lineno + 1) from None


def _surrogate(value: Any, where: str = "") -> tuple[str, str] | None:
    """The (field, character) of the first string in ``value`` holding an unpaired surrogate, if any."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return where, value[exc.start]
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _surrogate(key, where) if isinstance(key, str) else None
        found = found or _surrogate(item, f"{where}[{key}]" if isinstance(key, int) else
                                    f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def parse_json_line(line: str, path: str | os.PathLike, lineno: int) -> Any:
    """One JSON value; an unpaired surrogate escape (``"\\ud800"``: not text, and refused by tokenizers and by
    every UTF-8 writer later, far from this line) is refused here, naming the field."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=str(path), line=lineno) from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)", path=str(path), line=lineno) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DataError(f"invalid JSON ({exc})", path=str(path), line=lineno) from None
    found = _surrogate(obj) if _ESCAPED_SURROGATE.search(line) else None
    if found:
        raise DataError(f"unpaired surrogate {found[1]!r}: not valid Unicode text", path=str(path), line=lineno,
                        field=found[0] or None)
    return obj


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON is a DataError with the line."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        obj = parse_json_line(line, path, lineno)
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=lineno)
        yield lineno, obj

