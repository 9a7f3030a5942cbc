"""The long server checks: schemathesis at length, a slowloris crowd larger than a default ``ulimit -n``, and a
10-minute soak at steady load (errors, latency, RSS slope), against a real ``densekit serve`` on 127.0.0.1.

    python scripts/faults/soak.py --output runs/faults/soak.json                 # all-MiniLM-L6-v2, 1,000 docs
    python scripts/faults/soak.py --duration 60 --fuzz-examples 100 --crowd 300  # a quick look

The index is a flat index of a seeded SciFact slice encoded by ``--model``; the server runs with one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.faults.serving import (  # noqa: E402
    LoadResult,
    build_index,
    hostile_connections,
    running_server,
    schema_fuzz,
    search_client,
    steady_load,
)


def crowd(server, size: int, seconds: float) -> dict:
    """``size`` hostile connections (half dripping a head, a tenth dripping a body, the rest silent) while one
    client searches; what the server closed, and how the client fared."""
    stop, report = threading.Event(), {}
    slow, body = size // 2, size // 10
    attack = threading.Thread(target=lambda: report.update(
        hostile_connections(server, slow, size - slow - body, stop, body_drip=body)), daemon=True)
    attack.start()
    result, lock = LoadResult(0), threading.Lock()
    start = time.perf_counter()
    time.sleep(1)
    search_client(server, threading.Event(), result, lock, seed=11, max_requests=50)
    time.sleep(max(0.0, seconds - (time.perf_counter() - start)))
    stop.set()
    attack.join(120)
    return {**report, "client": result.summary(skip_s=0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--scifact", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact"))
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600, help="soak seconds")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=60, help="seconds of the soak left out of the RSS slope")
    parser.add_argument("--fuzz-examples", type=int, default=500)
    parser.add_argument("--crowd", type=int, default=2000, help="hostile connections at once")
    parser.add_argument("--work", default="runs/faults/soak-work")
    parser.add_argument("--output", default="runs/faults/soak.json")
    args = parser.parse_args(argv)

    from densekit.models import resolve_model
    from tests.helpers import scifact_subset

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    beir = work / "beir"
    if not beir.exists():
        scifact_subset(Path(args.scifact), beir, n_queries=50, n_docs=args.docs)
    index = work / "index"
    if not index.exists():
        build_index(beir, resolve_model(args.model), index)
    out: dict = {"model": args.model, "docs": args.docs, "clients": args.clients}
    with running_server(index, work / "server.log") as server:
        out["schemathesis"] = {k: v for k, v in schema_fuzz(server, args.fuzz_examples).items()
                               if k not in ("output", "output_tail")}
        print("schemathesis:", out["schemathesis"], flush=True)
        out["crowd"] = crowd(server, args.crowd, seconds=15)
        print("crowd:", {k: v for k, v in out["crowd"].items() if k != "client"}, flush=True)
        soak = steady_load(server, args.duration, clients=args.clients, sample_every=2.0)
        out["soak"] = soak.summary(skip_s=args.warmup)
        out["soak"]["rss_samples"] = [(round(t, 1), round(m, 1)) for t, m in soak.rss]
        out["server_alive"] = server.alive()
    out["server_log_5xx"] = (work / "server.log").read_text().count("Exception in ASGI application")
    print("soak:", {k: v for k, v in out["soak"].items() if k != "rss_samples"}, flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    ok = (out["schemathesis"]["exit"] == 0 and out["soak"]["errors"] == 0 and out["server_alive"]
          and out["crowd"]["client"]["errors"] == 0 and out["server_log_5xx"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
