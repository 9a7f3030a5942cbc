"""The options of ``densekit serve`` that shape the server: request limits, batching, API key, swap, mmap, GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from densekit.errors import ConfigError
from densekit.options import option


@dataclass
class ServerConfig:
    """server limits and behaviour"""

    max_k: int = option(100, help="largest k a request may ask for")
    max_queries: int = option(64, help="queries per request")
    max_query_chars: int = option(2048, help="characters per query")
    max_body_bytes: int = option(1 << 20, help="request body size limit")
    batch_wait_ms: float = option(0.0, help="extra time to gather concurrent requests into one encode call "
                                  "(0: requests that arrived while the last batch ran form the next one)")
    max_batch_queries: int = option(128, help="queries per encode call")
    api_key: str | None = option(None, help="require this key on every route but /health "
                                            "(default: $DENSEKIT_API_KEY, else none)")
    allow_swap: bool = option(True, flag="--no-swap", help="disable POST /admin/swap")
    mmap: Literal["auto", "on", "off"] = option("auto", help="memory-map the index (auto: when index.faiss is "
                                                             "over 1 GiB)")
    gpu: bool = option(True, flag="--no-gpu", help="keep the index on the CPU even when faiss has GPUs")
    gpu_mode: Literal["shard", "replicate"] = option("shard", help="with several GPUs: split the vectors across "
                                                                    "them (capacity) or copy them to each "
                                                                    "(throughput)")
    gpu_fp16: bool = option(False, help="hold the index in half precision on the GPUs (half the memory)")
    read_timeout: float = option(10.0, help="seconds a connection has to send a whole request head, and then its "
                                            "body; slower (or silent) connections are closed (slowloris)")

    def __post_init__(self) -> None:
        for name in ("max_k", "max_queries", "max_query_chars", "max_body_bytes", "max_batch_queries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.batch_wait_ms < 0:
            raise ConfigError("--batch-wait-ms must not be negative")
        if self.read_timeout <= 0:
            raise ConfigError("--read-timeout must be positive")
        if self.api_key is None:
            self.api_key = os.environ.get("DENSEKIT_API_KEY") or None
