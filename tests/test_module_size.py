"""No module under src/ grows past 500 lines: a longer one is split by what it does."""

from __future__ import annotations

from pathlib import Path

MAX_LINES = 500
SRC = Path(__file__).resolve().parents[1] / "src"


def oversized_modules(root: Path, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """Every ``.py`` file under ``root`` longer than ``limit`` lines, with its line count."""
    found = []
    for path in sorted(root.rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > limit:
            found.append((path.relative_to(root.parent).as_posix(), count))
    return found


def test_every_module_is_at_most_500_lines():
    offenders = oversized_modules(SRC)
    assert not offenders, f"modules over {MAX_LINES} lines (split them): " + ", ".join(
        f"{path} ({count} lines)" for path, count in offenders
    )


def test_the_check_names_each_long_module(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "short.py").write_text("x = 1\n" * MAX_LINES)
    (package / "sub" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert oversized_modules(package) == [("pkg/sub/long.py", MAX_LINES + 1)]
