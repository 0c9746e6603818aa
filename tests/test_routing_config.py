"""The routing configuration: the documented example loads; every refusal names its key path."""

from pathlib import Path

import pytest
import yaml

from routekeeper.contract.errors import ConfigError
from routekeeper.routing.config import RuleAny
from routekeeper.settings import load_settings

EXAMPLE = Path(__file__).parent / "data" / "routing-example.yaml"


def load(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return load_settings(path, workspace=tmp_path)


def example():
    return yaml.safe_load(EXAMPLE.read_text())


def refused(tmp_path, data) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data)
    return info.value.message


def test_the_documented_example_loads(tmp_path):
    settings = load(tmp_path, EXAMPLE.read_text())
    assert [m.name for m in settings.models] == ["small", "large", "local"]
    assert settings.models[0].backend.api_key_env == "SMALL_KEY"
    assert settings.models[2].backend.type == "echo"
    assert isinstance(settings.decisions[0].when, RuleAny)
    assert settings.decisions[1].when is None
    assert settings.auto_model_names == ["auto"]


def test_the_readme_shows_the_example(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for line in EXAMPLE.read_text().splitlines():
        assert line in readme, f"README lacks the example line: {line!r}"


def test_make_run_example_loads(tmp_path):
    settings = load_settings(
        Path(__file__).parents[1] / "examples" / "routekeeper.yaml", workspace=tmp_path
    )
    assert {m.backend.type for m in settings.models} == {"echo"}


def test_rule_referencing_an_undefined_signal(tmp_path):
    data = example()
    data["decisions"][0]["when"] = {"any": ["keywords:code", {"not": "regex:nope"}]}
    assert "decisions.0.when.any.1.not: unknown signal 'regex:nope'" in refused(tmp_path, data)


def test_rule_reference_without_a_family(tmp_path):
    data = example()
    data["decisions"][0]["when"] = "code"
    message = refused(tmp_path, data)
    assert "decisions.0.when: unknown signal 'code'" in message and "family:name" in message


def test_malformed_rule_node(tmp_path):
    data = example()
    data["decisions"][0]["when"] = {"any": ["keywords:code"], "all": ["regex:ticket"]}
    assert "decisions.0.when: a rule is a signal reference" in refused(tmp_path, data)
    data["decisions"][0]["when"] = {"all": []}
    assert "decisions.0.when.all: must be a non-empty list" in refused(tmp_path, data)


def test_decision_naming_an_unknown_model(tmp_path):
    data = example()
    data["decisions"][1]["model"] = "huge"
    assert "decisions.1.model: unknown model 'huge'" in refused(tmp_path, data)


def test_model_without_a_backend(tmp_path):
    data = example()
    del data["models"][1]["backend"]
    assert "models.1.backend: Field required" in refused(tmp_path, data)


def test_model_with_an_unknown_backend_type(tmp_path):
    data = example()
    data["models"][1]["backend"] = {"type": "carrier-pigeon"}
    assert "models.1.backend" in refused(tmp_path, data)


def test_bad_backend_url_names_its_path_without_the_tag(tmp_path):
    data = example()
    data["models"][0]["backend"]["base_url"] = "ftp://nope"
    assert "models.0.backend.base_url: must be an http:// or https:// URL" in refused(
        tmp_path, data
    )


def test_no_default_decision(tmp_path):
    data = example()
    data["decisions"][1]["when"] = "keywords:code"
    assert "decisions: no default decision" in refused(tmp_path, data)


def test_several_default_decisions(tmp_path):
    data = example()
    del data["decisions"][0]["when"]
    assert "decisions: several default decisions (decisions.0, decisions.1)" in refused(
        tmp_path, data
    )


def test_invalid_regex(tmp_path):
    data = example()
    data["signals"]["regex"][0]["pattern"] = "[A-Z"
    assert "signals.regex.0.pattern: invalid regular expression" in refused(tmp_path, data)


def test_duplicate_names(tmp_path):
    data = example()
    data["models"][1]["name"] = "small"
    assert "models.1.name: duplicate model 'small'" in refused(tmp_path, data)
    data = example()
    data["signals"]["keywords"].append({"name": "code", "any": ["x"]})
    assert "signals.keywords.1.name: duplicate signal 'code'" in refused(tmp_path, data)


def test_keyword_signal_needs_exactly_one_list(tmp_path):
    data = example()
    data["signals"]["keywords"][0] = {"name": "code", "any": ["a"], "all": ["b"]}
    assert "signals.keywords.0: give exactly one of `any` or `all`" in refused(tmp_path, data)


def test_unknown_keys_in_routing_sections(tmp_path):
    data = example()
    data["decisions"][0]["priorty"] = 3
    data["signals"]["keywrods"] = []
    message = refused(tmp_path, data)
    assert "decisions.0.priorty: unknown key" in message
    assert "signals.keywrods: unknown key" in message


def test_auto_name_colliding_with_a_model(tmp_path):
    data = example()
    data["auto_model_names"] = ["auto", "small"]
    assert "auto_model_names.1: 'small' is also a configured model name" in refused(tmp_path, data)


def test_metadata_and_embedding_signals_validate(tmp_path):
    data = example()
    data["signals"]["metadata"] = [
        {"name": "acme", "source": "header", "key": "x-tenant", "equals": "acme"}
    ]
    data["signals"]["embeddings"] = [
        {"name": "billing", "candidates": ["refund my invoice"], "threshold": 0.5}
    ]
    settings = load(tmp_path, data)
    assert settings.signals.names() >= {"metadata:acme", "embeddings:billing"}
    data["signals"]["metadata"] = [{"name": "bad", "source": "header", "equals": "x"}]
    assert "signals.metadata.0: source: header needs `key`" in refused(tmp_path, data)


def test_a_currency_longer_than_replay_stores_is_refused(tmp_path):
    """`currency: USD-cents` used to load, then every priced replay finish was refused."""
    data = {
        "models": [
            {
                "name": "m",
                "backend": {"type": "echo"},
                "pricing": {"prompt_per_1m": 1, "currency": "USD-cents"},
            }
        ],
        "decisions": [{"name": "default", "model": "m"}],
    }
    assert "models.0.pricing.currency" in refused(tmp_path, data)
