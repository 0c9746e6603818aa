"""routekeeper.contract imports nothing but the standard library and itself."""

import ast
import sys
from pathlib import Path

import routekeeper.contract

CONTRACT_DIR = Path(routekeeper.contract.__file__).parent


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.append("." * node.level + (node.module or ""))
    return names


def test_contract_imports_only_stdlib_and_itself():
    offenders = []
    files = sorted(CONTRACT_DIR.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("."):
                offenders.append(f"{path.name}: relative import {name}")
            elif name.startswith("routekeeper."):
                if not name.startswith("routekeeper.contract"):
                    offenders.append(f"{path.name}: {name}")
            elif top not in sys.stdlib_module_names and top != "__future__":
                offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_checker_catches_a_framework_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import fastapi\nfrom routekeeper.storage import schema\n")
    names = _imports(bad)
    assert "fastapi" in names and "routekeeper.storage" in names
    assert "fastapi" not in sys.stdlib_module_names
