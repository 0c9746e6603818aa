"""docs/state-inventory.md is generated from the registry; it must not drift."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from routekeeper.cli.main import app
from routekeeper.contract import SURFACES
from routekeeper.settings import load_settings
from routekeeper.storage.inventory import inventory_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "state-inventory.md"


def test_inventory_document_matches_the_registry(tmp_path):
    generated = inventory_markdown(load_settings(None, workspace=tmp_path))
    assert DOC.read_text() == generated, (
        "docs/state-inventory.md is stale: run `make inventory` "
        "(routekeeper state inventory --format md > docs/state-inventory.md)"
    )


def test_cli_markdown_is_the_document(tmp_path):
    result = CliRunner().invoke(app, ["state", "inventory", "--workspace", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == DOC.read_text()


def test_json_inventory_lists_every_surface_with_its_placement(tmp_path):
    config = tmp_path / "c.yaml"
    backends = {
        "main": {"type": "sqlite"},
        "pg": {"type": "postgres", "dsn": "postgresql://u:pw@h/db"},
    }
    surfaces = {name: {"backend": "pg"} for name in SURFACES}
    config.write_text(yaml.safe_dump({"state": {"backends": backends, "surfaces": surfaces}}))
    result = CliRunner().invoke(
        app,
        [
            "state",
            "inventory",
            "--format",
            "json",
            "--config",
            str(config),
            "--workspace",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(SURFACES)
    for row in rows:
        assert {"name", "owner", "class", "backend", "restart_expectation", "recovery"} <= set(row)
        assert {"id_prefix", "tenant_scoped", "writes", "retention", "lifecycle"} <= set(row)
        assert row["backend"] == "pg" and row["backend_type"] == "postgres"
    assert "pw" not in result.output
