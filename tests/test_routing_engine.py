"""Signals, rule trees and decision selection, without any network."""

import pytest
import yaml

from routekeeper.router.services.chat import ChatService, ModelNotFound
from routekeeper.routing.engine import RoutingEngine
from routekeeper.routing.request import prompt_input, routing_input
from routekeeper.settings import load_settings
from routekeeper.upstream.messages import estimate_tokens
from routekeeper.upstream.openai import UpstreamPool

CONFIG = """
models:
  - {name: small, backend: {type: echo}}
  - {name: large, backend: {type: echo}}
  - {name: vip, backend: {type: echo}}
signals:
  keywords:
    - {name: code, any: [python, traceback, "stack trace"]}
    - {name: both, all: [invoice, refund]}
    - {name: exact, any: [SQL], case_sensitive: true}
    - {name: partial, any: [log], whole_words: false}
  regex:
    - {name: ticket, pattern: "[A-Z]+-[0-9]+"}
  context_length:
    - {name: long, min_tokens: 50}
    - {name: short, max_tokens: 5}
  metadata:
    - {name: acme, source: header, key: x-tenant, equals: acme}
    - {name: gold, source: metadata, key: tier, any_of: [gold, platinum]}
    - {name: bob, source: user, pattern: "^bob"}
    - {name: tagged, source: metadata, key: tag, present: true}
decisions:
  - name: coding
    priority: 10
    when: {any: ["keywords:code", "regex:ticket"]}
    model: large
  - name: vip
    priority: 10
    when: {all: ["metadata:acme", {not: "keywords:both"}]}
    model: vip
    plugins: {system_prompt: {mode: replace, text: "Be brief."}}
  - name: billing
    priority: 20
    when: "keywords:both"
    model: large
  - name: default
    model: small
"""


@pytest.fixture
def settings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return load_settings(path, workspace=tmp_path)


@pytest.fixture
def engine(settings):
    return RoutingEngine(settings)


async def signals_of(engine, text, **kwargs):
    found, _ = await engine.evaluate_signals(prompt_input(text, **kwargs))
    return {s.ref for s in found if s.matched}


async def test_keywords_any_all_case_and_whole_words(engine):
    assert "keywords:code" in await signals_of(engine, "A Python question")
    assert "keywords:code" in await signals_of(engine, "see the STACK TRACE below")
    assert "keywords:code" not in await signals_of(engine, "pythonic ideas")  # whole words
    assert "keywords:both" not in await signals_of(engine, "about my invoice")
    assert "keywords:both" in await signals_of(engine, "refund this invoice")
    assert "keywords:exact" in await signals_of(engine, "a SQL query")
    assert "keywords:exact" not in await signals_of(engine, "a sql query")
    assert "keywords:partial" in await signals_of(engine, "the catalogue")


async def test_regex_and_context_length(engine):
    assert "regex:ticket" in await signals_of(engine, "see ABC-123")
    assert "regex:ticket" not in await signals_of(engine, "see abc-123")
    assert "context_length:short" in await signals_of(engine, "hi")
    long_text = "word " * 60
    found = await signals_of(engine, long_text)
    assert "context_length:long" in found and "context_length:short" not in found


async def test_metadata_header_user_and_presence(engine):
    assert "metadata:acme" in await signals_of(engine, "x", headers={"X-Tenant": "acme"})
    assert "metadata:acme" not in await signals_of(engine, "x", headers={"x-tenant": "other"})
    assert "metadata:gold" in await signals_of(engine, "x", metadata={"tier": "platinum"})
    assert "metadata:bob" in await signals_of(engine, "x", user="bobby")
    assert "metadata:bob" not in await signals_of(engine, "x")
    assert "metadata:tagged" in await signals_of(engine, "x", metadata={"tag": ""})


async def test_highest_priority_wins_and_ties_go_to_configuration_order(engine):
    result = await engine.route(prompt_input("python refund invoice"))
    assert result.decision.name == "billing"  # 20 beats coding's 10
    tie = await engine.route(prompt_input("python", headers={"x-tenant": "acme"}))
    assert tie.decision.name == "coding"  # coding and vip are both 10: coding comes first
    assert "coding, vip" in tie.reason


async def test_not_rule_and_default_fallback(engine):
    vip = await engine.route(prompt_input("hello", headers={"x-tenant": "acme"}))
    assert vip.decision.name == "vip" and vip.model.name == "vip"
    blocked = await engine.route(prompt_input("invoice refund", headers={"x-tenant": "acme"}))
    assert blocked.decision.name == "billing"
    plain = await engine.route(prompt_input("hello"))
    assert plain.decision.name == "default" and plain.model.name == "small"
    assert "default" in plain.reason
    assert [d.matched for d in plain.decisions] == [False, False, False, True]


async def test_the_last_user_message_is_what_signals_read(engine):
    body = {
        "messages": [
            {"role": "user", "content": "python"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "now"}, {"type": "image_url"}]},
        ]
    }
    inp = routing_input(body)
    assert inp.text == "now"
    assert "python" in inp.all_text
    assert (await engine.route(inp)).decision.name == "default"


def test_token_estimate_is_local_and_plausible():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 4  # two 5-letter words, 2 pieces each
    assert 200 <= estimate_tokens("The quick brown fox jumps. " * 40) <= 400


async def test_chat_plan_routes_passes_through_and_refuses(settings, engine):
    pool = UpstreamPool()
    try:
        service = ChatService(settings, engine, pool)
        routed = await service.plan(
            {
                "model": "auto",
                "messages": [
                    {"role": "system", "content": "old"},
                    {"role": "user", "content": "hi"},
                ],
            },
            {"x-tenant": "acme"},
        )
        assert routed.decision.name == "vip"
        assert routed.body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert all(m["content"] != "old" for m in routed.body["messages"])  # replace mode
        direct = await service.plan(
            {"model": "large", "messages": [{"role": "user", "content": "python"}]}, {}
        )
        assert direct.decision is None and direct.model.name == "large"
        streamed = await service.plan(
            {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "x"}]}, {}
        )
        assert streamed.body["stream_options"] == {"include_usage": True}
        assert streamed.client_wants_usage is False
        with pytest.raises(ModelNotFound) as info:
            await service.plan({"model": "nope", "messages": []}, {})
        assert info.value.status == 404 and info.value.code == "model_not_found"
        assert service.model_names() == ["small", "large", "vip", "auto"]
    finally:
        await pool.aclose()


async def test_prepend_keeps_existing_system_messages(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["decisions"][1]["plugins"]["system_prompt"]["mode"] = "prepend"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    settings = load_settings(path, workspace=tmp_path)
    pool = UpstreamPool()
    try:
        service = ChatService(settings, RoutingEngine(settings), pool)
        plan = await service.plan(
            {
                "model": "auto",
                "messages": [
                    {"role": "system", "content": "old"},
                    {"role": "user", "content": "hi"},
                ],
            },
            {"x-tenant": "acme"},
        )
        assert [m["content"] for m in plan.body["messages"]] == ["Be brief.", "old", "hi"]
    finally:
        await pool.aclose()


class CountingEmbedder:
    """A deterministic stand-in that counts how often texts are embedded."""

    name = "counting"
    dimension = 3

    def __init__(self):
        self.calls: list[list[str]] = []

    async def embed(self, texts):
        import numpy as np

        self.calls.append(list(texts))
        rows = [
            [1.0, 0.0, 0.0] if "refund" in t or "money" in t else [0.0, 1.0, 0.0] for t in texts
        ]
        return np.asarray(rows, dtype=np.float32)

    async def aclose(self):
        pass


async def test_candidates_are_embedded_once_per_load_not_per_request(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["signals"]["embeddings"] = [
        {"name": "billing", "candidates": ["refund please", "invoice refund"], "threshold": 0.9}
    ]
    data["decisions"].insert(
        0, {"name": "money", "priority": 50, "when": "embeddings:billing", "model": "large"}
    )
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(data))
    embedder = CountingEmbedder()
    engine = RoutingEngine(load_settings(path, workspace=tmp_path), embedder)
    await engine.prepare()
    assert embedder.calls == [["refund please", "invoice refund"]]
    first = await engine.route(prompt_input("give me my money"))
    second = await engine.route(prompt_input("hello"))
    assert (first.decision.name, second.decision.name) == ("money", "default")
    assert embedder.calls[1:] == [["give me my money"], ["hello"]]  # one query each, no candidates
    signal = next(s for s in first.signals if s.family == "embeddings")
    assert signal.score == 1.0 and signal.detail["closest"] == "refund please"


async def test_the_token_estimate_is_made_only_when_something_needs_it(settings, tmp_path):
    from routekeeper.routing.explain import explain

    long_talk = routing_input({"messages": [{"role": "user", "content": "word " * 200}]})
    assert (await RoutingEngine(settings).route(long_talk)).tokens == estimate_tokens("word " * 200)
    path = tmp_path / "no-length.yaml"
    config = yaml.safe_load(CONFIG)
    del config["signals"]["context_length"]
    path.write_text(yaml.safe_dump(config))
    engine = RoutingEngine(load_settings(path, workspace=tmp_path))
    untouched = routing_input({"messages": [{"role": "user", "content": "word " * 200}]})
    assert (await engine.route(untouched)).decision.name == "default"
    assert "all_text" not in vars(untouched)  # nor is every message's text joined
    result = await engine.route(long_talk)
    assert result.tokens is None and result.decision.name == "default"
    assert (await explain(engine, long_talk))["tokens"] == estimate_tokens("word " * 200)
