"""Options of the corpus-sized steps (encode, mine, index, eval): how vectors are stored and how much memory a
step may give to corpus data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from densekit.errors import ConfigError
from densekit.options import option

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
DEFAULT_BUDGET = "1GB"


def parse_bytes(text: str | int, flag: str = "--memory-budget") -> int:
    """``"2GB"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"{flag} expects a size such as 512MB or 2GB, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 10**6:
        raise ConfigError(f"{flag} must be at least 1MB, got {text!r}")
    return value


def rows_within(budget: int, dim: int, copies: int = 2, minimum: int = 1024) -> int:
    """How many float32 rows of ``dim`` fit ``copies`` times into ``budget`` bytes (at least ``minimum``)."""
    return max(minimum, budget // max(1, copies * dim * 4))


@dataclass
class ScaleOptions:
    """corpus scale"""

    dtype: Literal["float32", "float16"] = option("float32", help="how corpus vectors are stored on disk "
                                                                  "(float16 halves the store; search runs in float32)")
    shard_size: int = option(16384, help="documents per embedding shard (the unit of resuming and of parallel "
                                         "encoding)")
    memory_budget: str = option(DEFAULT_BUDGET, help="memory for corpus-sized data: vector blocks streamed through "
                                                     "exact search, the index training sample and build blocks "
                                                     "(e.g. 512MB, 4GB; the model and libraries come on top)")
    stream_corpus: Literal["auto", "on", "off"] = option(
        "auto", help="read the corpus through a memory-mapped Arrow copy instead of a Python dict (auto: when the "
                     "corpus file is over 200 MB)")

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ConfigError(f"--shard-size must be at least 1, got {self.shard_size}")
        parse_bytes(self.memory_budget)

    @property
    def budget_bytes(self) -> int:
        return parse_bytes(self.memory_budget)

    @property
    def stream(self) -> bool | None:
        return {"auto": None, "on": True, "off": False}[self.stream_corpus]
