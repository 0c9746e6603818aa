"""The layers, enforced: which parts of routekeeper each part may import (every module,
recursively, module-level and function-level imports alike), where web frameworks may appear,
and each package README's "May import" line says the same as the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "routekeeper"

# Part -> the other parts it may import. A part is a top-level module or package of
# routekeeper, or a services/routes sub-package (they have rules of their own). Importing
# ``routekeeper`` itself (``__version__``) is allowed everywhere.
ALLOWED: dict[str, frozenset[str]] = {
    "contract": frozenset(),
    "tasks": frozenset(),
    "sse": frozenset({"tasks"}),
    "router": frozenset(),
    "sections": frozenset(),
    "storage": frozenset({"contract", "sections", "tasks"}),
    "upstream": frozenset({"contract", "sections"}),
    "routing": frozenset({"contract", "sections", "upstream"}),
    "settings": frozenset({"contract", "sections", "storage", "upstream", "routing"}),
    "runtime": frozenset({"contract", "settings", "storage", "tasks"}),
    "auth": frozenset({"contract", "sections", "storage", "tasks"}),
    "router.services": frozenset(
        {"contract", "sse", "settings", "storage", "upstream", "routing", "runtime", "tasks"}
    ),
    "dashboard.services": frozenset({"contract", "storage", "runtime"}),
    "jobs": frozenset(
        {
            "contract",
            "sse",
            "settings",
            "storage",
            "upstream",
            "routing",
            "runtime",
            "router.services",
            "tasks",
        }
    ),
    "compose": frozenset(
        {
            "contract",
            "settings",
            "storage",
            "upstream",
            "routing",
            "runtime",
            "auth",
            "router.services",
            "jobs",
        }
    ),
    "http": frozenset({"contract"}),
    "dashboard": frozenset({"contract"}),
    "router.routes": frozenset({"contract", "sse", "http", "router.services"}),
    "dashboard.routes": frozenset(
        {"contract", "sse", "http", "routing", "dashboard", "dashboard.services", "jobs"}
    ),
    "server": frozenset(
        {
            "contract",
            "settings",
            "runtime",
            "http",
            "compose",
            "auth",
            "router.services",
            "router.routes",
            "dashboard.services",
            "dashboard.routes",
            "jobs",
        }
    ),
    "cli": frozenset(
        {
            "contract",
            "settings",
            "storage",
            "routing",
            "runtime",
            "auth",
            "compose",
            "server",
        }
    ),
    "__main__": frozenset({"cli"}),
    "testing": frozenset(
        {"contract", "settings", "storage", "upstream", "routing", "runtime", "server"}
    ),
}
# Only these parts may use a web framework or server.
WEB = ("fastapi", "starlette", "uvicorn")
WEB_PARTS = {"http", "dashboard", "router.routes", "dashboard.routes", "server", "cli", "testing"}
SPLIT = ("router", "dashboard")


def part_of(module: str) -> str:
    """``routekeeper.router.services.chat`` -> ``router.services``."""
    parts = module.split(".")[1:]
    if len(parts) > 1 and parts[0] in SPLIT and parts[1] in ("services", "routes"):
        return ".".join(parts[:2])
    return parts[0]


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name != "routekeeper":
            found.append((name, path))
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of the module, with its line (``from routekeeper import x``
    counts as importing ``routekeeper.x``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "routekeeper":
                out += [(node.lineno, f"routekeeper.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def violations(checked: list[tuple[str, Path]]) -> list[str]:
    found = []
    for name, path in checked:
        part = part_of(name)
        allowed = ALLOWED.get(part)
        if allowed is None:
            found.append(f"{name}: part {part!r} is not in the layer table")
            continue
        for line, target in imports(path):
            where = f"{name}:{line}"
            if target.startswith("routekeeper."):
                if target == "routekeeper.__version__":
                    continue
                other = part_of(target)
                if other != part and other not in allowed:
                    found.append(f"{where}: {part} may not import {other} ({target})")
            elif target.split(".")[0] in WEB and part not in WEB_PARTS:
                found.append(f"{where}: {part} may not use {target.split('.')[0]}")
    return found


def test_every_module_imports_only_what_its_layer_allows():
    checked = modules()
    assert len(checked) > 50
    assert violations(checked) == []


def test_an_import_against_the_table_is_caught(tmp_path):
    bad = tmp_path / "routekeeper" / "storage" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "def later():\n    from routekeeper.settings import Settings\n"
        "from routekeeper.upstream.errors import UpstreamError\nimport fastapi\n"
    )
    found = violations([("routekeeper.storage.bad", bad)])
    assert sorted(v.split(": ", 1)[1] for v in found) == [
        "storage may not import settings (routekeeper.settings)",
        "storage may not import upstream (routekeeper.upstream.errors)",
        "storage may not use fastapi",
    ]


def test_the_table_is_a_direction():
    """No two parts may import each other (directly or through others)."""

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in ALLOWED[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [p for p in ALLOWED if p in reaches(p)]
    assert cycles == []


def readme_lines() -> list[tuple[str, Path]]:
    """(part, README) for every part that has a README in its package."""
    out = []
    for part in ALLOWED:
        package = part.split(".")[0]
        readme = SRC / package / "README.md"
        own = [p for p in (SRC / package).glob("*.py") if p.name != "__init__.py"]
        if readme.exists() and ("." in part or own):
            out.append((part, readme))
    return out


@pytest.mark.parametrize("part,readme", readme_lines(), ids=lambda v: str(v))
def test_each_package_readme_names_what_it_may_import(part, readme):
    sub = part.split(".")[1] if "." in part else None
    label = f"May import ({sub}):" if sub else "May import:"
    paragraphs = [" ".join(p.split()) for p in readme.read_text().split("\n\n")]
    lines = [p for p in paragraphs if p.startswith(label)]
    assert len(lines) == 1, f"{readme}: no single paragraph starting with {label!r}"
    named = {name.removeprefix("routekeeper.") for name in re.findall(r"`([\w.]+)`", lines[0])}
    assert named & set(ALLOWED) == set(ALLOWED[part]), (
        f"{readme}: {lines[0]!r} does not match the layer table {sorted(ALLOWED[part])}"
    )
