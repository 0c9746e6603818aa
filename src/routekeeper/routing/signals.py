"""Signal evaluators, one per family. Each turns a RoutingInput into a SignalMatch: whether
it matched, a score, and what it saw (for explain and replay)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routekeeper.routing.config import (
    ContextLengthSignal,
    EmbeddingSignal,
    KeywordSignal,
    MetadataSignal,
    RegexSignal,
)
from routekeeper.routing.request import RoutingInput


@dataclass(frozen=True)
class SignalMatch:
    family: str
    name: str
    matched: bool
    score: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.family}:{self.name}"


class KeywordEvaluator:
    def __init__(self, signal: KeywordSignal) -> None:
        self.signal = signal
        words = signal.any or signal.all or []
        flags = 0 if signal.case_sensitive else re.IGNORECASE
        self._patterns = [
            (
                w,
                re.compile(
                    rf"(?<!\w){re.escape(w)}(?!\w)" if signal.whole_words else re.escape(w), flags
                ),
            )
            for w in words
        ]

    def evaluate(self, inp: RoutingInput) -> SignalMatch:
        found = [w for w, p in self._patterns if p.search(inp.text)]
        total = len(self._patterns)
        matched = len(found) == total if self.signal.all else bool(found)
        return SignalMatch(
            "keywords", self.signal.name, matched, len(found) / total, {"found": found}
        )


class RegexEvaluator:
    def __init__(self, signal: RegexSignal) -> None:
        self.signal = signal
        self._pattern = re.compile(signal.pattern, 0 if signal.case_sensitive else re.IGNORECASE)

    def evaluate(self, inp: RoutingInput) -> SignalMatch:
        match = self._pattern.search(inp.text)
        detail = {"match": match.group(0)[:200]} if match else {}
        return SignalMatch(
            "regex", self.signal.name, match is not None, 1.0 if match else 0.0, detail
        )


class ContextLengthEvaluator:
    def __init__(self, signal: ContextLengthSignal) -> None:
        self.signal = signal

    def evaluate(self, inp: RoutingInput, tokens: int) -> SignalMatch:
        low, high = self.signal.min_tokens, self.signal.max_tokens
        matched = (low is None or tokens >= low) and (high is None or tokens <= high)
        return SignalMatch(
            "context_length", self.signal.name, matched, float(tokens), {"tokens": tokens}
        )


class MetadataEvaluator:
    def __init__(self, signal: MetadataSignal) -> None:
        self.signal = signal
        self._pattern = re.compile(signal.pattern) if signal.pattern else None

    def _value(self, inp: RoutingInput) -> str | None:
        s = self.signal
        if s.source == "user":
            return inp.user
        if s.source == "header":
            return inp.headers.get((s.key or "").lower())
        return inp.metadata.get(s.key or "")

    def evaluate(self, inp: RoutingInput) -> SignalMatch:
        s = self.signal
        value = self._value(inp)
        if s.present is not None:
            matched = (value is not None) == s.present
        elif value is None:
            matched = False
        elif s.equals is not None:
            matched = value == s.equals
        elif s.any_of is not None:
            matched = value in s.any_of
        else:
            assert self._pattern is not None
            matched = self._pattern.search(value) is not None
        return SignalMatch("metadata", s.name, matched, 1.0 if matched else 0.0, {"value": value})


class EmbeddingEvaluator:
    """Candidates are embedded once (``candidates`` set by the engine at load)."""

    def __init__(self, signal: EmbeddingSignal) -> None:
        self.signal = signal
        self.candidates: np.ndarray | None = None

    def evaluate(self, query: np.ndarray) -> SignalMatch:
        assert self.candidates is not None, "candidate embeddings not prepared"
        sims = self.candidates @ query
        score = float(sims.max() if self.signal.aggregation == "max" else sims.mean())
        best = int(sims.argmax())
        return SignalMatch(
            "embeddings",
            self.signal.name,
            score >= self.signal.threshold,
            round(score, 4),
            {"closest": self.signal.candidates[best], "threshold": self.signal.threshold},
        )
