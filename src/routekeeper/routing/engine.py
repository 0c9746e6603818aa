"""The routing engine: signals -> matching decisions -> one decision -> its model.

Selection: every decision whose rule tree matches is a candidate; the highest ``priority``
wins and ties go to configuration order. The default decision (the one without ``when``)
is the fallback when no other decision matches. Built once per configuration load;
embedding candidates are embedded then, not per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from routekeeper.routing.config import DecisionConfig, ModelConfig, RoutingConfig
from routekeeper.routing.request import RoutingInput
from routekeeper.routing.rules import rule_matches
from routekeeper.routing.signals import (
    ContextLengthEvaluator,
    EmbeddingEvaluator,
    KeywordEvaluator,
    MetadataEvaluator,
    RegexEvaluator,
    SignalMatch,
)
from routekeeper.upstream.messages import estimate_tokens

if TYPE_CHECKING:
    from routekeeper.routing.embedders import Embedder


@dataclass(frozen=True)
class DecisionOutcome:
    name: str
    priority: int
    matched: bool
    default: bool


@dataclass(frozen=True)
class RoutingResult:
    decision: DecisionConfig
    model: ModelConfig
    signals: list[SignalMatch]
    decisions: list[DecisionOutcome]
    reason: str
    tokens: int | None
    """The estimated tokens of all messages; None when nothing asked for them (no
    ``context_length`` signal is configured and the route was not explained)."""
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def matched_signals(self) -> list[SignalMatch]:
        return [s for s in self.signals if s.matched]


class RoutingEngine:
    """Routes requests for one loaded configuration. Call :meth:`prepare` once (it embeds
    the candidates of embedding signals) before :meth:`route`."""

    def __init__(self, settings: RoutingConfig, embedder: Embedder | None = None) -> None:
        self.models = {m.name: m for m in settings.models}
        self.decisions = list(settings.decisions)
        self.auto_model_names = frozenset(settings.auto_model_names)
        signals = settings.signals
        self._keywords = [KeywordEvaluator(s) for s in signals.keywords]
        self._regex = [RegexEvaluator(s) for s in signals.regex]
        self._context = [ContextLengthEvaluator(s) for s in signals.context_length]
        self._metadata = [MetadataEvaluator(s) for s in signals.metadata]
        self._embeddings = [EmbeddingEvaluator(s) for s in signals.embeddings]
        if self._embeddings and embedder is None:
            raise ValueError("embedding signals are configured but no embedder was given")
        self.embedder = embedder
        self._default = next((d for d in self.decisions if d.when is None), None)
        self._prepared = not self._embeddings

    @property
    def routes(self) -> bool:
        """Whether auto model names are served (a default decision exists)."""
        return self._default is not None

    async def prepare(self) -> None:
        if self._prepared:
            return
        assert self.embedder is not None
        for evaluator in self._embeddings:
            evaluator.candidates = await self.embedder.embed(evaluator.signal.candidates)
        self._prepared = True

    async def aclose(self) -> None:
        if self.embedder is not None:
            await self.embedder.aclose()

    async def evaluate_signals(
        self, inp: RoutingInput, *, count_tokens: bool = False
    ) -> tuple[list[SignalMatch], int | None]:
        # Estimating walks the text of every message (a long conversation's too): only when
        # a context_length signal, or the caller (explain), needs it.
        tokens = None
        if self._context or count_tokens:
            tokens = estimate_tokens(inp.all_text)
        out: list[SignalMatch] = [e.evaluate(inp) for e in self._keywords]
        out += [e.evaluate(inp) for e in self._regex]
        if tokens is not None:
            out += [e.evaluate(inp, tokens) for e in self._context]
        out += [e.evaluate(inp) for e in self._metadata]
        if self._embeddings:
            if not self._prepared:
                await self.prepare()
            assert self.embedder is not None
            query = (await self.embedder.embed([inp.text]))[0]
            out += [e.evaluate(np.asarray(query)) for e in self._embeddings]
        return out, tokens

    async def route(self, inp: RoutingInput, *, count_tokens: bool = False) -> RoutingResult:
        """The decision for ``inp``. Raises LookupError when no default decision exists.
        ``count_tokens``: estimate the tokens even when no signal needs them."""
        if self._default is None:
            raise LookupError("no decisions are configured")
        signals, tokens = await self.evaluate_signals(inp, count_tokens=count_tokens)
        matched = {s.ref for s in signals if s.matched}
        outcomes = [
            DecisionOutcome(
                d.name, d.priority, d.when is None or rule_matches(d.when, matched), d.when is None
            )
            for d in self.decisions
        ]
        candidates = [
            (d, o)
            for d, o in zip(self.decisions, outcomes, strict=True)
            if o.matched and not o.default
        ]
        if candidates:
            # max() keeps the first of equal keys: ties go to configuration order.
            winner, _ = max(candidates, key=lambda pair: pair[0].priority)
            others = [d.name for d, _ in candidates if d is not winner]
            reason = f"matched with the highest priority ({winner.priority})"
            if others:
                reason += f" among {', '.join([winner.name, *others])}"
        else:
            winner = self._default
            reason = "no other decision matched: the default"
        return RoutingResult(
            decision=winner,
            model=self.models[winner.model],
            signals=signals,
            decisions=outcomes,
            reason=reason,
            tokens=tokens,
        )


def build_embedder(settings: RoutingConfig) -> Embedder | None:
    """The embedder the configuration asks for, or None without embedding signals. Nothing
    heavy happens here: the local model loads on first use (in ``prepare``)."""
    if not settings.signals.embeddings:
        return None
    from routekeeper.routing.embedders import LocalEmbedder, OpenAIEmbedder

    config = settings.embedder
    if config.type == "openai":
        assert config.base_url and config.model
        return OpenAIEmbedder(
            base_url=config.base_url,
            model=config.model,
            api_key_env=config.api_key_env,
            timeout_seconds=config.timeout_seconds,
        )
    return LocalEmbedder()
