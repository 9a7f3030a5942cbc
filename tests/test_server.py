"""The HTTP search server: search, limits and bad input, API key, metrics, micro-batching, atomic swap, uvicorn."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient

from densekit.models import encode, load_model
from densekit.retrieval.index import DenseIndex
from densekit.retrieval.searcher import Searcher
from densekit.serving.app import app_for_folder, create_app
from densekit.serving.config import ServerConfig
from densekit.serving.schemas import SearchRequest, SwapRequest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import write_beir  # noqa: E402

TOPICS = ["protein folding", "gene expression", "cell membranes", "immune response", "neural circuits",
          "climate models", "battery chemistry", "galaxy formation"]


@pytest.fixture(autouse=True, scope="module")
def _faiss_single_thread(one_faiss_thread):
    yield


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def served(tmp_path_factory, model):
    """Index A (ids a*) and index B (same texts, ids b*, HNSW) over one small BEIR corpus."""
    root = tmp_path_factory.mktemp("served")
    corpus = {f"a{i}": {"title": TOPICS[i % 8], "text": f"report {i} on {TOPICS[i % 8]}, batch {i * 7 % 11}"}
              for i in range(120)}
    data = write_beir(root / "beir", corpus, {"q0": TOPICS[0]}, {"test": {"q0": {"a0": 1}}})
    ids = list(corpus)
    emb = encode(model, [f"{d['title']} {d['text']}" for d in corpus.values()], show_progress=False)
    DenseIndex.build(emb, ids, "flat", meta={"corpus": str(data)}).save(root / "a")
    b_corpus = {"b" + k[1:]: v for k, v in corpus.items()}
    write_beir(root / "beir_b", b_corpus, {"q0": TOPICS[0]}, {"test": {"q0": {"b0": 1}}})
    DenseIndex.build(emb, ["b" + d[1:] for d in ids], "hnsw", {"m": 8},
                     meta={"corpus": str(root / "beir_b")}).save(root / "b")
    return {"root": root, "corpus": corpus, "emb": emb, "ids": ids}


def expected_ids(model, served, queries, k):
    index = DenseIndex.build(served["emb"], served["ids"])
    return [[h.doc_id for h in hits] for hits in index.search_hits(encode(model, queries, show_progress=False), k)]


def test_search_one_and_many_queries(served, model):
    app = app_for_folder(served["root"] / "a", model)
    with TestClient(app) as client:
        one = client.post("/search", json={"query": TOPICS[2], "k": 5, "return_text": True})
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["index_version"] == 1 and len(body["results"]) == 1
        hits = body["results"][0]["hits"]
        assert [h["doc_id"] for h in hits] == expected_ids(model, served, [TOPICS[2]], 5)[0]
        assert all(h["text"] == f"{served['corpus'][h['doc_id']]['title']} {served['corpus'][h['doc_id']]['text']}"
                   for h in hits)
        assert hits[0]["score"] >= hits[-1]["score"]
        many = client.post("/search", json={"queries": TOPICS[:4], "k": 3}).json()
        assert [r["query"] for r in many["results"]] == TOPICS[:4]
        assert [[h["doc_id"] for h in r["hits"]] for r in many["results"]] == expected_ids(model, served, TOPICS[:4], 3)
        assert "text" not in many["results"][0]["hits"][0]  # only when asked for


def test_health_metrics_and_openapi(served, model):
    with TestClient(app_for_folder(served["root"] / "a", model)) as client:
        client.post("/search", json={"query": "x"})
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["index"]["count"] == 120 and health["index"]["version"] == 1
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'densekit_requests_total{route="/search",status="200"} 1.0' in metrics.text
        assert "densekit_index_vectors 120.0" in metrics.text and "densekit_batch_queries_bucket" in metrics.text
        spec = client.get("/openapi.json").json()
        assert {"/search", "/health", "/metrics", "/admin/swap"} <= set(spec["paths"])
        ref = spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert {"query", "queries", "k", "return_text"} <= set(schema["properties"])
        assert client.get("/docs").status_code == 200


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [
    ("empty query", {"json": {"query": ""}}, 422, "field 'query': String should have at least 1 character"),
    ("blank query", {"json": {"query": " \t "}}, 422, "field 'query': String should contain some text"),
    ("blank query in a list", {"json": {"queries": ["ok", "   "]}}, 422,
     "field 'queries.1': String should contain some text"),
    ("empty list", {"json": {"queries": []}}, 422, "field 'queries': List should have at least 1 item"),
    ("huge k", {"json": {"query": "x", "k": 10**12}}, 422, "field 'k': Input should be less than or equal to 100"),
    ("zero k", {"json": {"query": "x", "k": 0}}, 422, "field 'k': Input should be greater than or equal to 1"),
    ("k as a string", {"json": {"query": "x", "k": "10"}}, 422, "field 'k': Input should be a valid integer"),
    ("k as a float", {"json": {"query": "x", "k": 2.5}}, 422, "field 'k': Input should be a valid integer"),
    ("query as a number", {"json": {"query": 5}}, 422, "field 'query': Input should be a valid string"),
    ("queries with a number", {"json": {"queries": ["a", 3]}}, 422, "field 'queries.1': Input should be a valid"),
    ("unknown field", {"json": {"q": "x"}}, 422, "unknown field 'q' (fields: query, queries, k, return_text)"),
    ("no query at all", {"json": {"k": 3}}, 422, "exactly one of 'query'"),
    ("both query and queries", {"json": {"query": "a", "queries": ["b"]}}, 422, "exactly one of 'query'"),
    ("JSON array body", {"json": ["x"]}, 422, "must be a JSON object"),
    ("non-UTF-8 body", {"content": b'{"query": "caf\xe9"}', "headers": JSON}, 400, "not valid UTF-8 (byte 14)"),
    ("broken JSON", {"content": b'{"query": ', "headers": JSON}, 400, "not valid JSON"),
    ("empty body", {"content": b"", "headers": JSON}, 400, "not valid JSON"),
    ("no Content-Type", {"content": b'{"query": "x"}'}, 415, "'Content-Type: application/json'"),
    ("form Content-Type (curl -d)", {"data": {"query": "x"}}, 415, "application/x-www-form-urlencoded"),
    ("oversized batch", {"json": {"queries": ["x"] * 65}}, 413, "at most 64"),
    ("query too long", {"json": {"query": "x" * 3000}}, 422, "field 'query': String should have at most 2048 "),
    ("body too large", {"content": b'{"query": "' + b"x" * (2 << 20) + b'"}', "headers": JSON}, 413, "byte limit"),
]


def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(served, model):
    with TestClient(app_for_folder(served["root"] / "a", model)) as client:
        for name, kwargs, status, message in BAD_REQUESTS:
            response = client.post("/search", **kwargs)
            assert response.status_code == status, (name, response.text)
            assert message in response.json()["detail"], (name, response.json())
        assert client.post("/search", json={"query": TOPICS[0], "k": 2}).status_code == 200
        metrics = client.get("/metrics").text
        assert 'status="413"' in metrics and 'status="400"' in metrics


def test_chunked_body_over_the_limit_is_refused(served, model):
    config = ServerConfig(max_body_bytes=100)
    with TestClient(app_for_folder(served["root"] / "a", model, config)) as client:
        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(10):
                yield b"x" * 50
        response = client.post("/search", content=chunks())
        assert response.status_code == 413 and "100-byte limit" in response.json()["detail"]


def test_api_key_guards_everything_but_health(served, model):
    with TestClient(app_for_folder(served["root"] / "a", model, ServerConfig(api_key="s3cret"))) as client:
        assert client.get("/health").status_code == 200
        missing = client.post("/search", json={"query": "x"})
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        assert client.post("/search", json={"query": "x"}, headers={"X-API-Key": "nope"}).status_code == 403
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 401, path
        assert client.post("/admin/swap", json={"index": str(served["root"] / "b")}).status_code == 401
        assert client.post("/search", json={"query": "x"}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/search", json={"query": "x"},
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200


def count_encodes(app, delay: float = 0.0):
    """Wrap the batcher's encode to count calls (and optionally make each take ``delay`` seconds)."""
    batcher = app.state.server.batcher
    calls, started = [], threading.Event()
    original = batcher.encode_fn

    def counted(texts):
        calls.append(len(texts))
        started.set()
        time.sleep(delay)
        return original(texts)

    batcher.encode_fn = counted
    return calls, started


def test_concurrent_requests_share_one_encode(served, model):
    app = app_for_folder(served["root"] / "a", model, ServerConfig(batch_wait_ms=100))
    calls, _ = count_encodes(app)
    queries = [f"{TOPICS[i % 8]} {i}" for i in range(16)]

    async def fire():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            responses = await asyncio.gather(*[client.post("/search", json={"query": q, "k": 4 + i % 3})
                                               for i, q in enumerate(queries)])
        return [r.json() for r in responses]

    bodies = asyncio.run(fire())
    assert sum(calls) == 16 and len(calls) < 16  # batched
    want = expected_ids(model, served, queries, 6)
    for i, body in enumerate(bodies):  # every request got its own answer with its own k
        assert body["results"][0]["query"] == queries[i]
        assert [h["doc_id"] for h in body["results"][0]["hits"]] == want[i][:4 + i % 3]


def test_swap_keeps_in_flight_requests_on_the_old_index(served, model):
    app = app_for_folder(served["root"] / "a", model, ServerConfig(batch_wait_ms=20))
    _, started = count_encodes(app, delay=0.5)
    queries = [TOPICS[i % 8] for i in range(6)]

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            in_flight = [asyncio.create_task(client.post("/search", json={"query": q, "k": 3})) for q in queries]
            await asyncio.to_thread(started.wait, 10)  # the first batch is being encoded now
            swap = await client.post("/admin/swap", json={"index": str(served["root"] / "b")})
            old = await asyncio.gather(*in_flight)
            new = await client.post("/search", json={"query": TOPICS[0], "k": 3, "return_text": True})
        return swap, old, new

    swap, old, new = asyncio.run(scenario())
    assert swap.status_code == 200 and swap.json()["index"]["version"] == 2
    assert swap.json()["index"]["index_type"] == "hnsw"
    for response in old:
        assert response.status_code == 200
        body = response.json()
        assert body["index_version"] == 1 and all(h["doc_id"].startswith("a") for h in body["results"][0]["hits"])
    body = new.json()
    assert body["index_version"] == 2 and all(h["doc_id"].startswith("b") for h in body["results"][0]["hits"])
    assert body["results"][0]["hits"][0]["text"]  # text came along from index B's corpus
    assert app.state.server.current.version == 2


def test_bad_swaps_leave_the_old_index_serving(served, model, tmp_path):
    DenseIndex.build(np.eye(4, 16, dtype=np.float32), list("wxyz")).save(tmp_path / "wrong_dim")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "meta.json").write_text("{}")  # what a crash mid-build could leave without atomic_dir
    with TestClient(app_for_folder(served["root"] / "a", model)) as client:
        cases = [({"index": str(tmp_path / "missing")}, 404, "not found"),
                 ({"index": str(tmp_path / "wrong_dim")}, 422,
                  "16-dimensional vectors but the query encoder makes 32"),
                 ({"index": str(tmp_path / "half")}, 422, "index.faiss is missing"),
                 ({"folder": "x"}, 422, "unknown field 'folder' (fields: index, corpus)"),
                 ({"index": 3}, 422, "field 'index': Input should be a valid string (got 3)"),
                 ({}, 422, "field 'index': Field required")]
        for body, status, message in cases:
            response = client.post("/admin/swap", json=body)
            assert response.status_code == status and message in response.json()["detail"], response.text
        assert client.get("/health").json()["index"]["version"] == 1
        assert client.post("/search", json={"query": "x"}).json()["index_version"] == 1
        assert 'densekit_index_swaps_total{outcome="failed"} 2.0' in client.get("/metrics").text
    with TestClient(app_for_folder(served["root"] / "a", model, ServerConfig(allow_swap=False))) as client:
        refused = client.post("/admin/swap", json={"index": str(served["root"] / "b")})
        assert refused.status_code == 403 and "disabled" in refused.json()["detail"]


def test_swap_is_a_function_call_too(served, model):
    app = create_app(Searcher(DenseIndex.load(served["root"] / "a"), model), with_text=False)
    new = app.state.server.swap(served["root"] / "b")
    assert new.version == 2 and new.texts is None
    with TestClient(app) as client:
        body = client.post("/search", json={"query": TOPICS[1], "k": 2, "return_text": True})
        assert body.status_code == 422
        assert body.json()["detail"].startswith("field 'return_text': this server has no document text")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_on_loopback(served, model):
    import uvicorn

    port = free_port()
    app = app_for_folder(served["root"] / "a", model, ServerConfig(api_key="k"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"X-API-Key": "k"}, timeout=30) as client:
            assert client.get("/health").json()["status"] == "ok"
            hits = client.post("/search", json={"queries": TOPICS[:2], "k": 3}).json()["results"]
            assert [[h["doc_id"] for h in r["hits"]] for r in hits] == expected_ids(model, served, TOPICS[:2], 3)
            bad = client.post("/search", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
            assert bad.status_code == 400
            assert client.post("/search", json={"query": "still serving"}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_serve_command_checks_its_options():
    from densekit.cli import build_parser, commands, resolve
    from densekit.errors import ConfigError

    def options(*flags):
        return resolve(commands()["serve"], build_parser().parse_args(["serve", "--index", "x", *flags]))

    _, config, _ = options("--max-k", "50", "--api-key", "key", "--no-swap")
    assert config.max_k == 50 and config.api_key == "key" and not config.allow_swap
    with pytest.raises(ConfigError, match="--max-k must be at least 1"):
        options("--max-k", "0")


def test_rebuilt_folder_is_picked_up_by_a_swap_and_by_a_restart(served, model, tmp_path):
    """Deploy pattern: rebuild into the served path (an atomic rename), swap to the same path; a restart loads it."""
    folder = tmp_path / "live"
    DenseIndex.build(served["emb"], served["ids"]).save(folder)
    app = app_for_folder(folder, model, with_text=False)
    DenseIndex.build(served["emb"], ["b" + d[1:] for d in served["ids"]], "ivf-flat", {"nlist": 2}).save(folder)
    with TestClient(app) as client:
        before = client.post("/search", json={"query": TOPICS[3], "k": 2}).json()["results"][0]["hits"]
        assert client.post("/admin/swap", json={"index": str(folder)}).status_code == 200
        after = client.post("/search", json={"query": TOPICS[3], "k": 2}).json()["results"][0]["hits"]
    assert before[0]["doc_id"].startswith("a") and after[0]["doc_id"] == "b" + before[0]["doc_id"][1:]
    restarted = app_for_folder(folder, model, with_text=False)
    assert restarted.state.server.current.index.meta["index_type"] == "ivf-flat"


def test_openapi_request_schemas_are_the_pydantic_models(served, model):
    """The body schemas schemathesis will fuzz are the models FastAPI validates with, refusals included."""
    with TestClient(app_for_folder(served["root"] / "a", model)) as client:
        spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    for path, model_class in (("/search", SearchRequest), ("/admin/swap", SwapRequest)):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model_class.__name__}"}
        # FastAPI serves the spec without None values (exclude_none), so without the models' "default": null;
        # the search schema also states this server's limits (so that schema-valid requests are accepted)
        expected = jsonable_encoder(model_class.model_json_schema(), exclude_none=True)
        if model_class is SearchRequest:
            config = ServerConfig()
            expected["properties"]["k"]["maximum"] = config.max_k
            expected["properties"]["query"]["maxLength"] = config.max_query_chars
            expected["properties"]["queries"]["maxItems"] = config.max_queries
            expected["properties"]["queries"]["items"]["maxLength"] = config.max_query_chars
        assert components[model_class.__name__] == expected, path
        responses = spec["paths"][path]["post"]["responses"]
        assert {"400", "401", "403", "413", "415", "422"} <= set(responses), path
        for status in ("400", "413", "415", "422"):  # {"detail": "..."}, not FastAPI's list of errors
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    search = components["SearchRequest"]
    assert search["additionalProperties"] is False and search["properties"]["k"]["minimum"] == 1
    assert "HTTPValidationError" not in components
    assert spec["paths"]["/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchResponse"}
    assert "doc_id" in components["Hit"]["properties"] and "id" not in components["Hit"]["properties"]


def test_validation_messages_name_the_field(served, model):
    config = ServerConfig(max_k=20, max_query_chars=50)
    with TestClient(app_for_folder(served["root"] / "a", model, config)) as client:
        def detail(body, status=422):
            response = client.post("/search", json=body)
            assert response.status_code == status, response.text
            return response.json()["detail"]

        assert detail({"query": "x", "k": "10"}) == 'field \'k\': Input should be a valid integer (got "10")'
        assert detail({"query": "x", "return_text": "yes"}) == (
            "field 'return_text': Input should be a valid boolean (got \"yes\")")
        assert detail({"query": "x", "top_k": 5}) == (
            "unknown field 'top_k' (fields: query, queries, k, return_text)")
        assert detail({"query": "x", "k": 21}) == (
            "field 'k': Input should be less than or equal to 20 (this server's --max-k) (got 21)")
        assert detail({"query": "x", "k": -1}) == "field 'k': Input should be greater than or equal to 1 (got -1)"
        assert detail({"queries": ["ok", "y" * 51]}).startswith(
            "field 'queries.1': String should have at most 50 characters (this server's --max-query-chars)")
        # every error of a body is reported, one phrase each
        assert detail({"query": 1, "k": "2", "x": 0}) == (
            "field 'query': Input should be a valid string (got 1); field 'k': Input should be a valid integer "
            "(got \"2\"); unknown field 'x' (fields: query, queries, k, return_text)")
        assert detail({"queries": ["a", "b"], "k": 50}) == (
            "field 'k': Input should be less than or equal to 20 (this server's --max-k) (got 50)")


def test_invalid_utf8_and_json_are_400(served, model):
    with TestClient(app_for_folder(served["root"] / "a", model)) as client:
        for body, message in [(b'{"query": "\xff"}', "request body is not valid UTF-8 (byte 11); send UTF-8 JSON"),
                              (b'\xef\xbb\xbf{"query": "x"}',  # a UTF-8 byte order mark is not JSON
                               "request body is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) at "
                               "line 1 column 1"),
                              (b'{"query": "x",\n "k": }', "request body is not valid JSON: Expecting value at "
                                                           "line 2 column 7"),
                              (b"", "request body is not valid JSON: it is empty")]:
            response = client.post("/search", content=body, headers=JSON)
            assert response.status_code == 400 and response.json() == {"detail": message}, response.text
        for charset in ("application/json; charset=utf-8", "application/vnd.api+json"):
            ok = client.post("/search", content=b'{"query": "caf\xc3\xa9"}', headers={"Content-Type": charset})
            assert ok.status_code == 200, (charset, ok.text)


def test_concurrent_swap_is_refused_with_409(served, model, monkeypatch):
    import densekit.serving.state as state

    app = app_for_folder(served["root"] / "a", model, with_text=False)
    loading, release = threading.Event(), threading.Event()
    load = DenseIndex.load

    def slow_load(folder, mmap=False):
        loading.set()
        release.wait(10)
        return load(folder, mmap=mmap)

    monkeypatch.setattr(state.DenseIndex, "load", staticmethod(slow_load))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            first = asyncio.create_task(client.post("/admin/swap", json={"index": str(served["root"] / "b")}))
            await asyncio.to_thread(loading.wait, 10)
            second = await client.post("/admin/swap", json={"index": str(served["root"] / "b")})
            release.set()
            return await first, second

    first, second = asyncio.run(scenario())
    assert first.status_code == 200 and first.json()["index"]["version"] == 2
    assert second.status_code == 409 and "another index swap is in progress" in second.json()["detail"]
    assert app.state.server.current.version == 2
