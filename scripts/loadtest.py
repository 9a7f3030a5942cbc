"""Load test for ``densekit serve`` on loopback: N concurrent clients for a bounded time, optionally swapping the
index halfway through. Reports QPS, latency percentiles and every error; stops by itself.

It starts its own server (``densekit serve`` on 127.0.0.1, a free port, a random API key) unless ``--url`` points
at one already running on loopback, and only ever talks to 127.0.0.1/localhost.

    python scripts/loadtest.py --index runs/scifact-index --swap-to runs/scifact-index-hnsw \\
        --clients 32 --duration 60 --output runs/loadtest.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_queries(path: Path, limit: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts[:limit]


def start_server(index: str, port: int, api_key: str, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "densekit.cli", "serve", "--index", index, "--host", "127.0.0.1",
           "--port", str(port), "--api-key", api_key, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, env=env, cwd=REPO)


def wait_healthy(url: str, server: subprocess.Popen | None, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            sys.exit(f"the server exited with code {server.returncode} before it was healthy")
        try:
            response = httpx.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"no healthy server at {url} after {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def metric_value(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


async def run_phase(url: str, headers: dict, queries: list[str], clients: int, duration: float, max_requests: int,
                    k: int, swap_to: str | None, swap_at: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    versions: dict[int, int] = {}
    issued = 0
    swap: dict = {}
    start = time.perf_counter()
    stop_at = start + duration
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:
        async def client(worker: int) -> None:
            nonlocal issued
            i = worker
            while time.perf_counter() < stop_at and issued < max_requests:
                issued += 1
                body = {"query": queries[i % len(queries)], "k": k}
                i += clients
                sent = time.perf_counter()
                try:
                    response = await http.post("/search", json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - sent
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                payload = response.json()
                hits = payload["results"][0]["hits"]
                if len(hits) != k:
                    errors.append(f"{len(hits)} hits instead of {k}")
                    continue
                if not all(isinstance(hit.get("doc_id"), str) for hit in hits):
                    errors.append(f"a hit without a doc_id: {hits[0]}")
                    continue
                latencies.append(elapsed)
                versions[payload["index_version"]] = versions.get(payload["index_version"], 0) + 1

        async def swapper() -> None:
            await asyncio.sleep(duration * swap_at)
            swap["requested_at_s"] = round(time.perf_counter() - start, 3)
            sent = time.perf_counter()
            response = await http.post("/admin/swap", json={"index": swap_to})
            swap["seconds"] = round(time.perf_counter() - sent, 3)
            swap["status"] = response.status_code
            swap["response"] = response.json()
            if response.status_code != 200:
                errors.append(f"swap failed: HTTP {response.status_code}: {response.text[:200]}")

        tasks = [client(w) for w in range(clients)]
        if swap_to:
            tasks.append(swapper())
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    ms = [1000 * x for x in latencies]
    return {"clients": clients, "duration_s": round(wall, 2), "requests_ok": len(latencies), "errors": len(errors),
            "error_samples": errors[:10], "qps": round(len(latencies) / wall, 1),
            "latency_ms": {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
                           "max": round(max(ms), 2) if ms else None,
                           "mean": round(float(np.mean(ms)), 2) if ms else None},
            "responses_by_index_version": versions, "swap": swap or None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", help="index folder to serve (starts a server); or use --url")
    p.add_argument("--url", default=None, help="an already running server on loopback, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", default=None, help="with --url: its API key")
    p.add_argument("--swap-to", default=None, help="index folder to swap to halfway through the swap phase")
    p.add_argument("--queries", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact" / "queries.jsonl"))
    p.add_argument("--max-queries", type=int, default=2000, help="distinct query texts to cycle through")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    p.add_argument("--max-requests", type=int, default=200_000, help="hard cap on requests per phase")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring (not reported)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--swap-at", type=float, default=0.5, help="fraction of the swap phase at which to swap")
    p.add_argument("--server-arg", action="append", default=[], help="extra densekit serve option (repeatable)")
    p.add_argument("--output", default=str(REPO / "runs" / "loadtest.json"))
    args = p.parse_args()
    if not args.index and not args.url:
        p.error("give --index (start a server) or --url (use a running one)")

    server = None
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            sys.exit("this load test only targets loopback (127.0.0.1 / localhost)")
        url, api_key = args.url.rstrip("/"), args.api_key
    else:
        port, api_key = free_port(), secrets.token_hex(16)
        url = f"http://127.0.0.1:{port}"
        server = start_server(args.index, port, api_key, args.server_arg)
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        health = wait_healthy(url, server, timeout=300)
        queries = load_queries(Path(args.queries), args.max_queries)
        phases = {}
        if args.warmup > 0:
            asyncio.run(run_phase(url, headers, queries, args.clients, args.warmup, args.max_requests, args.k, None, 0))
        phases["steady"] = asyncio.run(run_phase(url, headers, queries, args.clients, args.duration,
                                                 args.max_requests, args.k, None, 0))
        print(f"steady: {json.dumps(phases['steady'])}", file=sys.stderr)
        if args.swap_to:
            phases["swap"] = asyncio.run(run_phase(url, headers, queries, args.clients, args.duration,
                                                   args.max_requests, args.k, args.swap_to, args.swap_at))
            print(f"swap: {json.dumps(phases['swap'])}", file=sys.stderr)
        metrics = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
        batches = metric_value(metrics, "densekit_batch_queries_count")
        queries_in_batches = metric_value(metrics, "densekit_batch_queries_sum")
        result = {
            "benchmark": "loadtest", "url": url, "index": args.index or health["index"]["folder"],
            "swap_to": args.swap_to, "k": args.k, "distinct_queries": len(queries),
            "server_at_start": health["index"], "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "phases": phases,
            "server_metrics": {"encode_batches": batches,
                               "mean_queries_per_batch": round(queries_in_batches / batches, 2) if batches else None},
        }
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on SIGINT
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    from densekit.io import atomic_write_json

    atomic_write_json(args.output, result)
    print(json.dumps({name: {k: v for k, v in ph.items() if k in ("qps", "latency_ms", "errors", "requests_ok")}
                      for name, ph in phases.items()}, indent=2))
    print(f"wrote {args.output}", file=sys.stderr)
    failed = sum(ph["errors"] for ph in phases.values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
