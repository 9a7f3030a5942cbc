from __future__ import annotations

import argparse
import json

from densekit.errors import ConfigError
from densekit.models import default_cache_dir


def parse_key_values(items: list[str] | None, flag: str) -> dict:
    """``["nlist=100", "metric=ip"]`` -> ``{"nlist": 100, "metric": "ip"}`` (values parsed as JSON when possible)."""
    out = {}
    for item in items or []:
        if isinstance(item, dict):
            out.update(item)
            continue
        if "=" not in str(item):
            raise ConfigError(f"{flag} expects KEY=VALUE, got '{item}'")
        key, value = str(item).split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def add_encoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    parser.add_argument("--bf16", action="store_true", help="encode under bf16 autocast (faster on AMX CPUs and GPUs)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="truncate inputs to this many tokens")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()),
                        help="where corpus embeddings are cached ('none' to disable)")


def cache_dir(args) -> str | None:
    return None if str(args.cache_dir).lower() == "none" else args.cache_dir
