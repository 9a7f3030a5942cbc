"""What the HTTP layer costs: ``densekit serve`` against a bare in-process encode + FAISS search, in one run.

The same index folder, model and SciFact test queries on both sides:

* one client: p50 latency of ``POST /search`` (k=10, one query a request, sequential) against the p50 of the same
  query encoded and searched in-process (``Searcher.search``); goal: <= 1.2x;
* ``--clients`` (32) concurrent clients for ``--seconds``: queries/s at saturation against the encoder's own
  batched throughput (the same queries encoded and searched in batches of 32 in-process); goal: >= 0.8x.

The server runs in its own process (``--threads`` torch/FAISS threads); the clients are asyncio + httpx in this
one. On a 2-core machine the clients and the server share the cores, which the ratios include. JSON to ``--out``.

    python scripts/bench/serving.py --index runs/scifact/index --out runs/bench/serving.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not come up")


async def saturate(url: str, queries: list[str], clients: int, seconds: float) -> tuple[int, int]:
    import httpx

    done, errors = 0, 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal done, errors
        async with httpx.AsyncClient(timeout=60) as http:
            j = i
            while time.perf_counter() < stop:
                response = await http.post(f"{url}/search", json={"query": queries[j % len(queries)], "k": 10})
                done += response.status_code == 200
                errors += response.status_code != 200
                j += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return done, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", default="runs/scifact/index")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/bench/serving.json")
    args = parser.parse_args()
    import httpx

    from densekit.data.beir import load_beir
    from densekit.retrieval.searcher import Searcher

    dataset = load_beir("scifact", "test")
    queries = [dataset.queries[q] for q in sorted(dataset.qrels)][: args.queries]
    searcher = Searcher.from_index(args.index)
    for query in queries[:10]:
        searcher.search(query, 10)  # warm-up
    bare = []
    for query in queries:
        start = time.perf_counter()
        searcher.search(query, 10)
        bare.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(queries), args.clients):
        searcher.batch_search(queries[i:i + args.clients], 10)
    batched_qps = len(queries) / (time.perf_counter() - start)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "densekit.cli", "serve", "--index", args.index, "--port", str(port), "--no-text"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url)
        with httpx.Client(timeout=60) as http:
            for query in queries[:10]:
                http.post(f"{url}/search", json={"query": query, "k": 10})
            served = []
            for query in queries:
                start = time.perf_counter()
                response = http.post(f"{url}/search", json={"query": query, "k": 10})
                served.append(time.perf_counter() - start)
                response.raise_for_status()
        done, errors = asyncio.run(saturate(url, queries, args.clients, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
    bare_p50, served_p50 = statistics.median(bare), statistics.median(served)
    saturated_qps = done / args.seconds
    result = {
        "queries": len(queries), "clients": args.clients, "seconds": args.seconds,
        "load_average": round(os.getloadavg()[0], 2),
        "one_client": {"bare_p50_ms": round(1000 * bare_p50, 2), "served_p50_ms": round(1000 * served_p50, 2),
                       "ratio_served_to_bare": round(served_p50 / bare_p50, 3)},
        "saturation": {"encoder_batched_qps": round(batched_qps, 1), "served_qps": round(saturated_qps, 1),
                       "ratio_served_to_encoder": round(saturated_qps / batched_qps, 3), "errors": errors},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
