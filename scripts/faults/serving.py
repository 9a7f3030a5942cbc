"""Attacks on a running ``densekit serve``: a server launcher, a steady-load soak with RSS sampling, slow and idle
connections, swaps that fail under load. Used by tests/test_server_attacks.py (short runs) and by
``scripts/faults/soak.py`` (the 10-minute soak).

Every client here talks to 127.0.0.1 only, with bounded request counts and durations.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
QUERIES = ["vitamin D and bone density", "gene expression in tumour cells", "antibiotic resistance mechanisms",
           "effects of smoking on the lungs", "stem cell differentiation", "insulin and type 2 diabetes",
           "malaria transmission by mosquitoes", "blood pressure and salt intake"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_index(beir: Path, model: str, folder: Path) -> Path:
    """A flat index of ``beir``'s corpus encoded by ``model`` (what ``densekit index`` writes)."""
    from densekit.data.beir import doc_text, load_beir
    from densekit.models import describe_model, encode, load_model
    from densekit.retrieval.index import DenseIndex

    dataset = load_beir(beir, split=None)
    doc_ids = list(dataset.corpus)
    emb = encode(load_model(model), [doc_text(dataset.corpus[d]) for d in doc_ids], show_progress=False)
    meta = {**describe_model(model), "corpus": str(Path(beir).resolve())}
    DenseIndex.build(emb, doc_ids, "flat", meta=meta).save(folder)
    return folder


@dataclass
class Server:
    url: str
    key: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.pid).memory_info().rss / 2**20

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def running_server(index: Path, log: Path, model: str | None = None, *extra: str,
                   timeout: float = 180) -> Iterator[Server]:
    """``densekit serve`` on a free 127.0.0.1 port with a random API key; stopped (SIGTERM, then SIGKILL) after."""
    import httpx

    port, key = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "densekit.cli", "serve", "--index", str(index), "--port", str(port),
               "--api-key", key, "--threads", "1", *(["--model", model] if model else []), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    handle = open(log, "w")  # noqa: SIM115 - the server holds it
    proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"densekit serve exited {proc.returncode}: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"densekit serve did not start in {timeout} s: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(url, key, proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        handle.close()


# --- steady load and memory ----------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # transport errors and wrong answers
    latencies_ms: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    versions: Counter = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + len(self.failures)

    def rss_slope_mb_per_min(self, skip_s: float) -> float:
        """Least-squares slope of RSS over time after the first ``skip_s`` seconds (warm-up: allocator pools)."""
        points = [(t, m) for t, m in self.rss if t >= skip_s]
        if len(points) < 3:
            return 0.0
        t, m = np.array(points).T
        return float(np.polyfit(t / 60, m, 1)[0])

    def summary(self, skip_s: float) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        mem = [m for t, m in self.rss if t >= skip_s] or [0.0]
        return {"seconds": round(self.seconds, 1), "requests": self.requests, "errors": self.errors,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "failures": self.failures[:5],
                "qps": round(self.requests / max(self.seconds, 1e-9), 2),
                "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                "max_ms": round(float(lat.max()), 1), "rss_start_mb": round(mem[0], 1),
                "rss_end_mb": round(mem[-1], 1), "rss_max_mb": round(max(mem), 1),
                "rss_slope_mb_per_min": round(self.rss_slope_mb_per_min(skip_s), 3),
                "index_versions": {str(k): v for k, v in sorted(self.versions.items())}}


def search_client(server: Server, stop: threading.Event, result: LoadResult, lock: threading.Lock, seed: int,
                  k: int = 10, max_requests: int = 1_000_000, pause_s: float = 0.0) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=60) as client:
        for _ in range(max_requests):
            if stop.is_set():
                return
            query = QUERIES[int(rng.integers(len(QUERIES)))]
            start = time.perf_counter()
            try:
                response = client.post("/search", json={"query": query, "k": k})
                body = response.json() if response.status_code == 200 else None
                problem = None
                if body is not None and (len(body["results"][0]["hits"]) != k or
                                         not all(h["doc_id"] for h in body["results"][0]["hits"])):
                    problem = f"a wrong answer: {json.dumps(body)[:200]}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                with lock:
                    result.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                result.statuses[response.status_code] += 1
                result.latencies_ms.append(1000 * (time.perf_counter() - start))
                if body is not None:
                    result.versions[body["index_version"]] += 1
                if problem:
                    result.failures.append(problem)
            if pause_s:
                stop.wait(pause_s)


def steady_load(server: Server, seconds: float, clients: int = 4, sample_every: float = 1.0,
                pause_s: float = 0.0) -> LoadResult:
    """``clients`` threads searching in a loop for ``seconds``, RSS of the server sampled every ``sample_every``."""
    result, lock, stop = LoadResult(seconds), threading.Lock(), threading.Event()
    threads = [threading.Thread(target=search_client, args=(server, stop, result, lock, i),
                                kwargs={"pause_s": pause_s}, daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    while time.perf_counter() - start < seconds:
        result.rss.append((time.perf_counter() - start, server.rss_mb()))
        time.sleep(sample_every)
    stop.set()
    for thread in threads:
        thread.join(120)
    result.seconds = time.perf_counter() - start
    return result


# --- slow and idle connections -------------------------------------------------------------------------------------

def hostile_connections(server: Server, slow: int, idle: int, stop: threading.Event, drip_s: float = 1.0,
                        body_drip: int = 0) -> dict:
    """Open ``slow`` connections that send a request head one byte every ``drip_s`` (slowloris), ``body_drip``
    that send a whole head and then the body a byte at a time, and ``idle`` that send nothing, until ``stop``;
    how many were opened, refused, and closed by the server (with the seconds it took)."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (f"POST /search HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {server.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 20\r\n\r\n").encode()
    kinds = ["slow"] * slow + ["body"] * body_drip + ["idle"] * idle
    socks, refused, opened_at = [], 0, time.perf_counter()
    for kind in kinds:
        try:
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.setblocking(False)
            if kind == "body":
                sock.sendall(head)
            socks.append((sock, kind))
        except OSError:
            refused += 1
    sent, closed, answers = [0] * len(socks), {}, Counter()
    while not stop.is_set():
        for n, (sock, kind) in enumerate(socks):
            if n in closed:
                continue
            try:
                data = sock.recv(4096)
                if data:
                    answers[data.split(b"\r\n", 1)[0].decode("latin-1")] += 1
                    continue
                closed[n] = time.perf_counter() - opened_at  # EOF: the server closed it
                continue
            except BlockingIOError:
                pass
            except OSError:
                closed[n] = time.perf_counter() - opened_at
                continue
            try:
                if kind == "slow":
                    sock.send(head[sent[n] % len(head):sent[n] % len(head) + 1])
                elif kind == "body":
                    sock.send(b" ")
                sent[n] += 1
            except BlockingIOError:
                pass
            except OSError:
                closed[n] = time.perf_counter() - opened_at
        stop.wait(drip_s)
    for sock, _ in socks:
        sock.close()
    by_kind = Counter(socks[n][1] for n in closed)
    return {"slow": slow, "body_drip": body_drip, "idle": idle, "opened": len(socks), "refused": refused,
            "closed_by_server": len(closed), "closed_by_kind": dict(by_kind), "answers": dict(answers),
            "closed_after_s_max": round(max(closed.values()), 1) if closed else None}


# --- schema-based fuzzing --------------------------------------------------------------------------------------

def schema_fuzz(server: Server, max_examples: int, seed: int = 0, timeout: float = 900) -> dict:
    """schemathesis (every check: no 5xx, responses as documented, bad data refused, good data accepted, auth
    enforced) over the server's own OpenAPI schema; the cases it generated and what it found."""
    import re

    command = [sys.executable, "-m", "schemathesis.cli", "--config-file",
               str(REPO / "scripts" / "faults" / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
               "--checks", "all", "--header", f"X-API-Key: {server.key}", "--max-examples", str(max_examples),
               "--seed", str(seed), "--workers", "1", "--request-timeout", "60", "--no-color"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    out = proc.stdout + proc.stderr
    generated = re.search(r"(\d+) generated", out)
    return {"exit": proc.returncode, "cases": int(generated.group(1)) if generated else 0,
            "failures": re.findall(r"^- (ST\d+ .*)$", out, flags=re.M), "server_alive": server.alive(),
            "output_tail": out[-4000:], "output": out}
