"""docs/settings.md and docs/cli.md are generated (routekeeper.cli.reference); they must not
drift from the settings models and the command tree."""

from pathlib import Path

import pytest

from routekeeper.cli.reference import cli_reference, settings_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(
    ("name", "generate"), [("settings.md", settings_reference), ("cli.md", cli_reference)]
)
def test_reference_matches_its_generator(name, generate):
    assert (DOCS / name).read_text(encoding="utf-8") == generate(), (
        f"docs/{name} is stale: run `make docs`"
    )


def test_settings_reference_has_every_key_of_every_section():
    text = settings_reference()
    for key in ("state.backends.<name>.synchronous", "replay.ack_timeout_ms", "server.port"):
        assert f"| `{key}` |" in text
    assert "`ROUTEKEEPER_SERVER__PORT`" in text
    assert "| `decisions.<n>.when.not` |" in text  # the YAML key, not the field name


def test_cli_reference_has_every_command():
    text = cli_reference()
    for command in ("serve", "state inventory", "db check", "routing explain", "replay tail"):
        assert f"## `routekeeper {command}`" in text
    assert "--json" not in text  # hidden options stay hidden


def test_every_setting_has_a_description():
    """A setting without a description in its model shows as a gap in the reference."""
    rows = [line for line in settings_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    bare = [row.split("|")[1].strip() for row in rows if not row.split("|")[4].strip()]
    assert bare == []
