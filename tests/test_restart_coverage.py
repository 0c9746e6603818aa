"""The meta-test: every registered surface has a kill-and-restart test on both backends."""

import shutil
from pathlib import Path

import pytest

from routekeeper.contract import SURFACES
from routekeeper.testing.restart import collect_restart_coverage, missing_restart_tests

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_every_registered_surface_has_restart_tests_on_sqlite_and_postgres():
    coverage = collect_restart_coverage([TESTS], rootdir=ROOT)
    assert missing_restart_tests(coverage) == [], (
        "every surface in routekeeper.contract.SURFACES needs a test marked "
        '@pytest.mark.restart(surface="<name>") that takes the restart_backend fixture'
    )
    assert set(coverage) <= set(SURFACES), "restart tests name unregistered surfaces"


@pytest.mark.slow
def test_the_meta_test_fails_when_a_restart_test_is_removed(tmp_path):
    copy = tmp_path / "tests"
    shutil.copytree(TESTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = (copy / "test_restart_runtime.py").read_text()
    marker = '@pytest.mark.restart(surface="runtime_events")'
    assert source.count(marker) == 1
    (copy / "test_restart_runtime.py").write_text(source.replace(marker, ""))
    coverage = collect_restart_coverage([copy], rootdir=ROOT)
    assert missing_restart_tests(coverage) == [
        "runtime_events on sqlite",
        "runtime_events on postgres",
    ]


def test_a_restart_test_without_the_backend_fixture_covers_nothing(tmp_path):
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["routekeeper.testing.pytest_plugin"]\n'
    )
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.restart(surface="runtime_status")\n'
        "def test_only_sqlite():\n    pass\n"
    )
    coverage = collect_restart_coverage([tmp_path], rootdir=tmp_path)
    assert missing_restart_tests(coverage, ["runtime_status"]) == [
        "runtime_status on sqlite",
        "runtime_status on postgres",
    ]
