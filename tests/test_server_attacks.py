"""A running ``densekit serve`` (a real process, a real SciFact slice, a tiny model) under attack: schema-based
fuzzing of its OpenAPI (schemathesis, every check), every route without the key, swaps that fail under load, slow
and idle connections, and a one-minute soak (no error, no memory growth). The 10-minute soak is
``scripts/faults/soak.py``; figures in docs/reliability.md.
"""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

from scripts.faults.serving import (
    LoadResult,
    build_index,
    hostile_connections,
    running_server,
    schema_fuzz,
    search_client,
    steady_load,
)
from tests.helpers import scifact_subset

READ_TIMEOUT = 3  # seconds a connection has to send a request head (and then its body); 10 by default


@pytest.fixture(scope="module")
def served(tmp_path_factory, scifact_dir, tiny_model_dir):
    root = tmp_path_factory.mktemp("attacks")
    beir = scifact_subset(scifact_dir, root / "beir", n_queries=10, n_docs=300)
    index = build_index(beir, tiny_model_dir, root / "index")
    with running_server(index, root / "server.log", None, "--read-timeout", str(READ_TIMEOUT)) as server:
        yield {"server": server, "root": root, "index": index}
        assert server.alive(), (root / "server.log").read_text()[-3000:]
    assert "Exception in ASGI application" not in (root / "server.log").read_text()  # what uvicorn logs for a 500


def test_every_route_but_health_needs_the_key(served):
    server = served["server"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        spec = client.get("/openapi.json", headers=server.headers()).json()
        routes = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]
        routes += [("GET", "/docs"), ("GET", "/redoc"), ("GET", "/docs/oauth2-redirect"), ("GET", "/openapi.json"),
                   ("GET", "/no-such-route"), ("DELETE", "/search"), ("PUT", "/admin/swap"), ("OPTIONS", "/search")]
        assert ("POST", "/search") in routes and ("POST", "/admin/swap") in routes and ("GET", "/metrics") in routes
        for method, path in routes:
            body = {"json": {"query": "x"}} if method in ("POST", "PUT") else {}
            missing = client.request(method, path, **body)
            wrong = client.request(method, path, headers={"X-API-Key": server.key + "x"}, **body)
            bearer = client.request(method, path, headers={"Authorization": "Bearer nope"}, **body)
            if path == "/health":
                assert missing.status_code == 200
                continue
            assert missing.status_code == 401, (method, path, missing.text)
            assert wrong.status_code == bearer.status_code == 403, (method, path, wrong.text)
            assert "text" not in missing.text and "doc_id" not in missing.text
        assert client.get("/health").json()["status"] == "ok"


def test_schema_fuzzing_finds_no_server_error_and_no_mismatch(served):
    """schemathesis with every check: no 5xx, responses as the schema says, bad bodies refused, good ones served,
    the key enforced (ignored_auth)."""
    result = schema_fuzz(served["server"], max_examples=60, seed=0)
    assert result["cases"] >= 100, result["output_tail"]
    assert result["exit"] == 0 and not result["failures"], result["output_tail"]
    assert result["server_alive"]
    print(f"schemathesis: {result['cases']} cases, no failure")  # shown with pytest -rP (docs/reliability.md)


def test_failed_swaps_under_load_keep_the_old_index(served, tmp_path):
    from densekit.retrieval.index import DenseIndex

    server = served["server"]
    DenseIndex.build(np.eye(4, 16, dtype=np.float32), list("wxyz")).save(tmp_path / "wrong_dim")
    truncated = tmp_path / "truncated"
    DenseIndex.load(served["index"]).save(truncated)
    data = (truncated / "index.faiss").read_bytes()
    (truncated / "index.faiss").write_bytes(data[: len(data) // 2])  # a copy cut short
    garbled = tmp_path / "garbled"
    DenseIndex.load(served["index"]).save(garbled)
    (garbled / "doc_ids.json").write_text('["a", ')
    bad = [str(tmp_path / "missing"), str(tmp_path / "wrong_dim"), str(truncated), str(garbled), "a\x00b",
           "\udc80", "x" * 5000, str(tmp_path)]
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=60) as client:
        before = client.post("/search", json={"query": "vitamin D", "k": 5}).json()
        version = client.get("/health").json()["index"]["version"]
        result, lock, stop = LoadResult(0), threading.Lock(), threading.Event()
        clients = [threading.Thread(target=search_client, args=(server, stop, result, lock, i), daemon=True)
                   for i in range(3)]
        for thread in clients:
            thread.start()
        statuses = []
        for _ in range(3):
            for folder in bad:
                response = client.post("/admin/swap", content=json.dumps({"index": folder}).encode(),
                                       headers={"Content-Type": "application/json"})
                statuses.append(response.status_code)
                assert response.status_code in (404, 409, 422), response.text
        stop.set()
        for thread in clients:
            thread.join(60)
        after = client.post("/search", json={"query": "vitamin D", "k": 5}).json()
        health = client.get("/health").json()
    assert result.requests > 0 and result.errors == 0, (result.statuses, result.failures[:3])
    assert set(result.versions) == {version} and health["index"]["version"] == version
    assert after["results"] == before["results"]
    assert 422 in statuses and 404 in statuses


def test_slow_and_idle_connections_do_not_starve_the_others(served):
    """300 connections that drip a request head a byte a second (slowloris), 50 that drip the body, 200 that send
    nothing: a normal client meanwhile gets every answer, and the server closes every one of them once its
    --read-timeout is up (uvicorn alone keeps them open forever: enough of them exhaust the file descriptors)."""
    server = served["server"]
    stop = threading.Event()
    report: dict = {}
    attack = threading.Thread(target=lambda: report.update(hostile_connections(server, 300, 200, stop,
                                                                               body_drip=50)), daemon=True)
    attack.start()
    try:
        result, lock = LoadResult(0), threading.Lock()
        threading.Event().wait(1)  # the connections are open and dripping
        search_client(server, threading.Event(), result, lock, seed=5, max_requests=30)
        threading.Event().wait(READ_TIMEOUT + 3)
    finally:
        stop.set()
        attack.join(60)
    assert report["opened"] == 550 and report["refused"] == 0, report
    assert result.requests == 30 and result.errors == 0, (result.statuses, result.failures[:3])
    assert report["closed_by_server"] == 550, report
    assert report["answers"].get("HTTP/1.1 408 Request Timeout") == 50, report
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200


def test_a_minute_of_steady_load_has_no_error_and_no_memory_growth(served):
    """60 s at steady load (4 clients): every request answered correctly, and the server's RSS after a 20 s
    warm-up grows by less than 5 MiB a minute (a leak of one 4 KiB object per request would be ~10x that)."""
    result = steady_load(served["server"], seconds=60, clients=4)
    summary = result.summary(skip_s=20)
    assert summary["requests"] > 100 and summary["errors"] == 0, summary
    assert summary["rss_slope_mb_per_min"] < 5.0, summary
    print(f"soak: {json.dumps(summary)}")  # shown with pytest -rP (docs/reliability.md)
