"""The routing part of the configuration file: models, signals, decisions, auto model names.

Validated when the settings load; every refusal names the key path, e.g.
``decisions.0.when.any.1: unknown signal 'keywords:nope'``."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from routekeeper.upstream.config import EchoModelBackend, OpenAIModelBackend

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
FAMILIES = ("keywords", "regex", "context_length", "embeddings", "metadata")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- models -------------------------------------------------------------------------------


ModelBackend = Annotated[OpenAIModelBackend | EchoModelBackend, Field(discriminator="type")]


class Pricing(_Strict):
    prompt_per_1m: float = Field(0.0, ge=0)
    completion_per_1m: float = Field(0.0, ge=0)
    currency: str = Field(
        "USD", min_length=1, max_length=8, description="A currency code (replay stores 8 chars)."
    )


class ModelConfig(_Strict):
    name: str = Field(pattern=NAME)
    backend: ModelBackend
    pricing: Pricing | None = None


# -- signals ------------------------------------------------------------------------------


class KeywordSignal(_Strict):
    name: str = Field(pattern=NAME)
    any: list[str] | None = Field(None, min_length=1)
    all: list[str] | None = Field(None, min_length=1)
    case_sensitive: bool = False
    whole_words: bool = True

    @model_validator(mode="after")
    def _one_list(self) -> KeywordSignal:
        if (self.any is None) == (self.all is None):
            raise ValueError("give exactly one of `any` or `all`")
        for word in self.any or self.all or []:
            if not word.strip():
                raise ValueError("keywords must not be blank")
        return self


class RegexSignal(_Strict):
    name: str = Field(pattern=NAME)
    pattern: str
    case_sensitive: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class ContextLengthSignal(_Strict):
    name: str = Field(pattern=NAME)
    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ContextLengthSignal:
        if self.min_tokens is None and self.max_tokens is None:
            raise ValueError("give min_tokens, max_tokens or both")
        if self.min_tokens is not None and self.max_tokens is not None:
            if self.min_tokens > self.max_tokens:
                raise ValueError("min_tokens is larger than max_tokens")
        return self


class EmbeddingSignal(_Strict):
    name: str = Field(pattern=NAME)
    candidates: list[str] = Field(min_length=1)
    threshold: float = Field(0.6, ge=-1.0, le=1.0)
    aggregation: Literal["max", "mean"] = "max"


class MetadataSignal(_Strict):
    """Matches the request's ``metadata.<key>``, its ``user`` field, or a header."""

    name: str = Field(pattern=NAME)
    source: Literal["metadata", "user", "header"]
    key: str | None = Field(None, description="metadata key or header name (not for user)")
    equals: str | None = None
    any_of: list[str] | None = Field(None, min_length=1)
    pattern: str | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> MetadataSignal:
        if self.source == "user" and self.key is not None:
            raise ValueError("`key` is not used with source: user")
        if self.source != "user" and not self.key:
            raise ValueError(f"source: {self.source} needs `key`")
        tests = [t for t in (self.equals, self.any_of, self.pattern, self.present) if t is not None]
        if len(tests) != 1:
            raise ValueError("give exactly one of equals, any_of, pattern, present")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return self


class SignalsConfig(_Strict):
    keywords: list[KeywordSignal] = Field(default_factory=list)
    regex: list[RegexSignal] = Field(default_factory=list)
    context_length: list[ContextLengthSignal] = Field(default_factory=list)
    embeddings: list[EmbeddingSignal] = Field(default_factory=list)
    metadata: list[MetadataSignal] = Field(default_factory=list)

    def names(self) -> set[str]:
        """Every ``family:name`` reference a rule may use."""
        return {f"{family}:{s.name}" for family in FAMILIES for s in getattr(self, family)}

    @model_validator(mode="after")
    def _unique(self) -> SignalsConfig:
        for family in FAMILIES:
            seen: set[str] = set()
            for index, signal in enumerate(getattr(self, family)):
                if signal.name in seen:
                    raise ValueError(f"@{family}.{index}.name: duplicate signal {signal.name!r}")
                seen.add(signal.name)
        return self


class EmbedderConfig(_Strict):
    """Where embedding signals get their vectors."""

    type: Literal["local", "openai"] = "local"
    base_url: str | None = Field(None, description="openai: the server's /v1 URL")
    model: str | None = Field(None, description="openai: the embedding model name")
    api_key_env: str | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _remote(self) -> EmbedderConfig:
        if self.type == "openai" and not (self.base_url and self.model):
            raise ValueError("type: openai needs base_url and model")
        return self


# -- decisions ----------------------------------------------------------------------------


class RuleAll(_Strict):
    all: list[Rule] = Field(min_length=1)


class RuleAny(_Strict):
    any: list[Rule] = Field(min_length=1)


class RuleNot(_Strict):
    not_: Rule = Field(alias="not")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _parse_rule(value: object, path: str = "") -> object:
    """Turn YAML into rule nodes with one clear error (and its sub-path) per mistake, rather
    than one error per union member."""
    if isinstance(value, str | RuleAll | RuleAny | RuleNot):
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                f"@{path}: empty signal reference" if path else "empty signal reference"
            )
        return value
    where = f"@{path}: " if path else ""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in RULE_KEYS:
        raise ValueError(
            f"{where}a rule is a signal reference ('family:name') or exactly one of "
            "{all: [rules]}, {any: [rules]}, {not: rule}"
        )
    key, inner = next(iter(value.items()))
    sub = f"{path}.{key}" if path else key
    if key == "not":
        return RuleNot(**{"not": _parse_rule(inner, sub)})
    if not isinstance(inner, list) or not inner:
        raise ValueError(f"@{sub}: must be a non-empty list of rules")
    nodes = [_parse_rule(item, f"{sub}.{i}") for i, item in enumerate(inner)]
    return RuleAll(all=nodes) if key == "all" else RuleAny(any=nodes)


RULE_KEYS = ("all", "any", "not")
# A rule is a "family:signal" reference or an all/any/not node over rules.
Rule = Annotated[str | RuleAll | RuleAny | RuleNot, BeforeValidator(_parse_rule)]
for _node in (RuleAll, RuleAny, RuleNot):
    _node.model_rebuild()


class SystemPromptPlugin(_Strict):
    mode: Literal["prepend", "replace"] = "prepend"
    text: str = Field(min_length=1)


class ReplayPlugin(_Strict):
    """What replay records capture for requests this decision routes (nothing by default)."""

    capture_request_body: bool = False
    capture_response_body: bool = False
    max_body_bytes: int = Field(65536, ge=64, le=16 * 1024 * 1024)


class DecisionPlugins(_Strict):
    system_prompt: SystemPromptPlugin | None = None
    replay: ReplayPlugin | None = None


class DecisionConfig(_Strict):
    name: str = Field(pattern=NAME)
    priority: int = 0
    when: Rule | None = Field(None, description="Omit for the one default decision.")
    model: str
    plugins: DecisionPlugins = Field(default_factory=DecisionPlugins)


def rule_references(rule: Rule, path: str) -> list[tuple[str, str]]:
    """Every (key path, signal reference) in a rule tree."""
    if isinstance(rule, str):
        return [(path, rule)]
    if isinstance(rule, RuleAll):
        return [
            r for i, sub in enumerate(rule.all) for r in rule_references(sub, f"{path}.all.{i}")
        ]
    if isinstance(rule, RuleAny):
        return [
            r for i, sub in enumerate(rule.any) for r in rule_references(sub, f"{path}.any.{i}")
        ]
    return rule_references(rule.not_, f"{path}.not")


def routing_problems(
    models: list[ModelConfig],
    signals: SignalsConfig,
    decisions: list[DecisionConfig],
    auto_model_names: list[str],
) -> list[str]:
    """Cross-references the schema cannot check, each as ``key.path: problem``."""
    problems: list[str] = []
    model_names: dict[str, int] = {}
    for index, model in enumerate(models):
        if model.name in model_names:
            problems.append(f"models.{index}.name: duplicate model {model.name!r}")
        model_names[model.name] = index
    for index, name in enumerate(auto_model_names):
        if name in model_names:
            problems.append(f"auto_model_names.{index}: {name!r} is also a configured model name")
    known = signals.names()
    defaults = [i for i, d in enumerate(decisions) if d.when is None]
    names: set[str] = set()
    for index, decision in enumerate(decisions):
        if decision.name in names:
            problems.append(f"decisions.{index}.name: duplicate decision {decision.name!r}")
        names.add(decision.name)
        if decision.model not in model_names:
            problems.append(
                f"decisions.{index}.model: unknown model {decision.model!r}"
                f" (configured: {', '.join(model_names) or 'none'})"
            )
        if decision.when is not None:
            for path, ref in rule_references(decision.when, f"decisions.{index}.when"):
                if ref not in known:
                    hint = "family:name, e.g. keywords:code" if ":" not in ref else ""
                    problems.append(
                        f"{path}: unknown signal {ref!r}"
                        + (f" (write it as {hint})" if hint else "")
                    )
    if decisions and not defaults:
        problems.append("decisions: no default decision (exactly one decision without `when`)")
    if len(defaults) > 1:
        paths = ", ".join(f"decisions.{i}" for i in defaults)
        problems.append(
            f"decisions: several default decisions ({paths}); exactly one may omit `when`"
        )
    return problems


class RoutingConfig(Protocol):
    """What the routing engine reads of the settings (``routekeeper.settings.Settings``
    satisfies it): the models, signals, decisions, auto names and the embedder."""

    @property
    def models(self) -> list[ModelConfig]: ...

    @property
    def signals(self) -> SignalsConfig: ...

    @property
    def decisions(self) -> list[DecisionConfig]: ...

    @property
    def auto_model_names(self) -> list[str]: ...

    @property
    def embedder(self) -> EmbedderConfig: ...
