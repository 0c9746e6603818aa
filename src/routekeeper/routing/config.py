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
    prompt_per_1m: float = Field(
        0.0, ge=0, description="Price of a million prompt tokens, in `currency`."
    )
    completion_per_1m: float = Field(
        0.0, ge=0, description="Price of a million completion tokens, in `currency`."
    )
    currency: str = Field(
        "USD", min_length=1, max_length=8, description="A currency code (replay stores 8 chars)."
    )


class ModelConfig(_Strict):
    name: str = Field(
        pattern=NAME,
        description="What clients and decisions call the model; unique, not an auto model name.",
    )
    backend: ModelBackend = Field(
        description="Where the model's requests go: an OpenAI-compatible server or the echo."
    )
    pricing: Pricing | None = Field(
        None,
        description="Token prices that replay records' cost is computed from; absent: no cost.",
    )


# -- signals ------------------------------------------------------------------------------


class KeywordSignal(_Strict):
    name: str = Field(pattern=NAME, description="Rules refer to it as `keywords:<name>`.")
    any: list[str] | None = Field(
        None,
        min_length=1,
        description="Matches when one of these words or phrases is in the last user message; "
        "give this or `all`.",
    )
    all: list[str] | None = Field(
        None,
        min_length=1,
        description="Matches when every one of these words or phrases is in the last user "
        "message; give this or `any`.",
    )
    case_sensitive: bool = Field(False, description="false: the words match in any case.")
    whole_words: bool = Field(
        True,
        description="A word matches only where no letter, digit or _ adjoins it; false: "
        "inside other words too.",
    )

    @model_validator(mode="after")
    def _one_list(self) -> KeywordSignal:
        if (self.any is None) == (self.all is None):
            raise ValueError("give exactly one of `any` or `all`")
        for word in self.any or self.all or []:
            if not word.strip():
                raise ValueError("keywords must not be blank")
        return self


class RegexSignal(_Strict):
    name: str = Field(pattern=NAME, description="Rules refer to it as `regex:<name>`.")
    pattern: str = Field(
        description="A Python regular expression; matches when found anywhere in the last "
        "user message."
    )
    case_sensitive: bool = Field(True, description="false: the pattern ignores case.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class ContextLengthSignal(_Strict):
    name: str = Field(pattern=NAME, description="Rules refer to it as `context_length:<name>`.")
    min_tokens: int | None = Field(
        None,
        ge=0,
        description="Matches when the estimated tokens of all messages are at least this; "
        "absent: no lower bound.",
    )
    max_tokens: int | None = Field(
        None,
        ge=0,
        description="Matches when the estimated tokens of all messages are at most this; "
        "absent: no upper bound.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ContextLengthSignal:
        if self.min_tokens is None and self.max_tokens is None:
            raise ValueError("give min_tokens, max_tokens or both")
        if self.min_tokens is not None and self.max_tokens is not None:
            if self.min_tokens > self.max_tokens:
                raise ValueError("min_tokens is larger than max_tokens")
        return self


class EmbeddingSignal(_Strict):
    name: str = Field(pattern=NAME, description="Rules refer to it as `embeddings:<name>`.")
    candidates: list[str] = Field(
        min_length=1,
        description="Phrases the last user message is compared with (embedded once, at start).",
    )
    threshold: float = Field(
        0.6,
        ge=-1.0,
        le=1.0,
        description="Matches when the aggregated cosine similarity is at least this.",
    )
    aggregation: Literal["max", "mean"] = Field(
        "max",
        description="How the similarities to the candidates make the score: the highest "
        "(`max`) or their average (`mean`).",
    )


class MetadataSignal(_Strict):
    """Matches the request's ``metadata.<key>``, its ``user`` field, or a header."""

    name: str = Field(pattern=NAME, description="Rules refer to it as `metadata:<name>`.")
    source: Literal["metadata", "user", "header"] = Field(
        description="The value tested: the request's `metadata.<key>`, its `user` field, or the "
        "request header named `key`."
    )
    key: str | None = Field(None, description="metadata key or header name (not for user)")
    equals: str | None = Field(None, description="Matches when the value is exactly this.")
    any_of: list[str] | None = Field(
        None, min_length=1, description="Matches when the value is one of these."
    )
    pattern: str | None = Field(
        None,
        description="A regular expression (case-sensitive); matches when found in the value.",
    )
    present: bool | None = Field(
        None, description="true: matches when the value is there; false: when it is absent."
    )

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
    keywords: list[KeywordSignal] = Field(
        default_factory=list, description="Words or phrases in the last user message."
    )
    regex: list[RegexSignal] = Field(
        default_factory=list, description="Regular expressions searched in the last user message."
    )
    context_length: list[ContextLengthSignal] = Field(
        default_factory=list, description="Bounds on the estimated tokens of all messages."
    )
    embeddings: list[EmbeddingSignal] = Field(
        default_factory=list,
        description="Semantic similarity of the last user message to candidate phrases.",
    )
    metadata: list[MetadataSignal] = Field(
        default_factory=list,
        description="Tests of a request's metadata value, `user` field or a header.",
    )

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

    type: Literal["local", "openai"] = Field(
        "local",
        description="`local`: all-MiniLM-L6-v2 on the CPU (the `embeddings` extra); `openai`: an "
        "OpenAI-compatible /v1/embeddings server (needs base_url and model).",
    )
    base_url: str | None = Field(None, description="openai: the server's /v1 URL")
    model: str | None = Field(None, description="openai: the embedding model name")
    api_key_env: str | None = Field(
        None,
        description="openai: environment variable holding the key, sent as a bearer token "
        "(embedding fails while it is unset); absent: no key.",
    )
    timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="openai: longest wait for each step of a request (connect, send, each "
        "read), not for the whole request.",
    )

    @model_validator(mode="after")
    def _remote(self) -> EmbedderConfig:
        if self.type == "openai" and not (self.base_url and self.model):
            raise ValueError("type: openai needs base_url and model")
        return self


# -- decisions ----------------------------------------------------------------------------


class RuleAll(_Strict):
    all: list[Rule] = Field(min_length=1, description="Matches when every one of these matches.")


class RuleAny(_Strict):
    any: list[Rule] = Field(min_length=1, description="Matches when one of these matches.")


class RuleNot(_Strict):
    not_: Rule = Field(alias="not", description="Matches when this rule does not.")
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
    mode: Literal["prepend", "replace"] = Field(
        "prepend",
        description="`prepend`: the text goes first, before the client's messages; `replace`: "
        "the client's system messages are dropped and the text goes first.",
    )
    text: str = Field(min_length=1, description="The system message sent upstream.")


class ReplayPlugin(_Strict):
    """What replay records capture for requests this decision routes (nothing by default)."""

    capture_request_body: bool = Field(
        False,
        description="Keep the client's request JSON, and its user text for search (`q`).",
    )
    capture_response_body: bool = Field(
        False, description="Keep the JSON answer, or a stream's assembled message text."
    )
    max_body_bytes: int = Field(
        65536,
        ge=64,
        le=16 * 1024 * 1024,
        description="Each captured body is cut at this many UTF-8 bytes (and flagged truncated); "
        "the searchable prompt text at 128 KiB at most.",
    )


class DecisionPlugins(_Strict):
    system_prompt: SystemPromptPlugin | None = Field(
        None, description="A system message added upstream; absent: the messages go unchanged."
    )
    replay: ReplayPlugin | None = Field(
        None, description="Bodies the replay record captures; absent: none."
    )


class DecisionConfig(_Strict):
    name: str = Field(
        pattern=NAME, description="Unique; sent as x-routekeeper-decision and kept in replay."
    )
    priority: int = Field(
        0,
        description="The highest-priority matching decision wins, ties in configuration order; "
        "the default's is not used.",
    )
    when: Rule | None = Field(None, description="Omit for the one default decision.")
    model: str = Field(description="The configured model (a models name) requests go to.")
    plugins: DecisionPlugins = Field(
        default_factory=DecisionPlugins,
        description="What changes for the requests this decision routes (not for pass-through).",
    )


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
