"""Errors that point the user at the exact place in their input that is wrong."""

from __future__ import annotations


class DensekitError(Exception):
    """Base class for errors densekit raises on purpose (the CLI prints them without a traceback)."""


class DataError(DensekitError, ValueError):
    """Bad input data: names the file, the line (1-based) and the field when they are known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = []
        if path is not None:
            where.append(str(path) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(DensekitError, ValueError):
    """A bad option, config key or strategy name."""


class OutputError(DensekitError):
    """An output cannot be written (read-only folder, disk full, ...): names the path; what was there before is
    left as it was."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)
