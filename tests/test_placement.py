"""The contract check: where each surface lives, and what `routekeeper state check` refuses."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from routekeeper.cli.main import app
from routekeeper.contract import SURFACES, BackendKind
from routekeeper.contract.errors import ContractViolation
from routekeeper.settings import Settings, load_settings
from routekeeper.storage.placement import check_contract, contract_problems, placements

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SECRET = "s3cret"
# Port 1 on loopback: nothing listens there, so a check that tried to connect would fail.
UNREACHABLE_DSN = f"postgresql://rk:{SECRET}@127.0.0.1:1/routekeeper"

MEMORY_STATUS_ONLY = """\
state:
  backends:
    main: {type: sqlite, path: state.db}
    mem:  {type: memory}
  surfaces:
    runtime_status: {backend: mem}
"""

BOTH_ON_MEMORY = """\
state:
  backends:
    main: {type: sqlite, path: state.db}
    mem:  {type: memory}
  surfaces:
    runtime_status: {backend: mem}
    runtime_events: {backend: mem}
"""

BOTH_ON_MEMORY_ALLOWED = BOTH_ON_MEMORY + "  allow_ephemeral: [runtime_status, runtime_events]\n"

SHARED_ON_SQLITE = """\
state:
  mode: shared
"""

SHARED_ON_POSTGRES = f"""\
state:
  mode: shared
  default_backend: pg
  backends:
    pg:   {{type: postgres, dsn: "{UNREACHABLE_DSN}"}}
    main: {{type: sqlite, path: unused.db}}
"""

SHARED_ON_MEMORY_ALLOWED = """\
state:
  mode: shared
  default_backend: mem
  backends:
    mem: {type: memory}
  allow_ephemeral: [runtime_status, runtime_events]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ROUTEKEEPER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routekeeper.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def settings_for(tmp_path: Path, text: str) -> Settings:
    return load_settings(write_config(tmp_path, text), workspace=tmp_path / "ws")


def state_check(tmp_path: Path, text: str | None) -> tuple[int, str]:
    args = ["state", "check", "--workspace", str(tmp_path / "ws")]
    if text is not None:
        args += ["--config", str(write_config(tmp_path, text))]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unexpected exception: {result.exception!r}\n{result.output}"
    )
    return result.exit_code, ANSI.sub("", result.output)


def problems_about(problems: list[str], surface: str) -> list[str]:
    return [p for p in problems if p.startswith(f"surface {surface} ")]


# --- the default configuration ---------------------------------------------------------------


def test_the_default_config_keeps_the_contract(tmp_path: Path) -> None:
    settings = load_settings(workspace=tmp_path / "ws")
    assert contract_problems(settings) == []
    result = check_contract(settings)
    assert [p.surface.name for p in result] == list(SURFACES)
    for placement in result:
        assert placement.surface is SURFACES[placement.surface.name]
        assert placement.backend == "main"
        assert placement.kind is BackendKind.SQLITE
        assert placement.location == str(tmp_path / "ws" / "state.db")
        assert placement.ephemeral is False


def test_placements_follow_surface_bindings(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        """\
        state:
          default_backend: other
          backends:
            main:  {type: sqlite, path: main.db}
            other: {type: sqlite, path: /var/tmp/other.db}
          surfaces:
            runtime_status: {backend: main}
            runtime_events: {backend: main}
        """,
    )
    by_name = {p.surface.name: p for p in placements(settings)}
    assert by_name["runtime_status"].backend == "main"
    assert by_name["runtime_status"].location == str(tmp_path / "ws" / "main.db")
    assert by_name["runtime_events"].backend == "main"
    assert contract_problems(settings) == []


def test_state_check_with_the_default_config_exits_0(tmp_path: Path) -> None:
    code, output = state_check(tmp_path, None)
    assert code == 0, output
    assert "ok: every surface is on a backend its class allows" in output
    # A check only: it creates no database (not even the workspace).
    assert not (tmp_path / "ws").exists()


def test_state_check_with_the_issue_example_exits_0(tmp_path: Path) -> None:
    example = (Path(__file__).parent / "data" / "state-example.yaml").read_text()
    code, output = state_check(tmp_path, example)
    assert code == 0, output


# --- durable surfaces on memory --------------------------------------------------------------


def test_runtime_status_on_memory_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, MEMORY_STATUS_ONLY)
    with pytest.raises(ContractViolation) as info:
        check_contract(settings)
    about_status = problems_about(info.value.problems, "runtime_status")
    assert len(about_status) == 1
    problem = about_status[0]
    assert "shared_durable_workflow_state" in problem
    assert "'mem'" in problem
    assert "state.surfaces.runtime_status.backend" in problem
    assert "state.allow_ephemeral: [runtime_status]" in problem
    assert problem in info.value.message
    assert info.value.details["problems"] == info.value.problems


def test_both_runtime_surfaces_on_memory_are_each_refused(tmp_path: Path) -> None:
    problems = contract_problems(settings_for(tmp_path, BOTH_ON_MEMORY))
    status = problems_about(problems, "runtime_status")
    events = problems_about(problems, "runtime_events")
    assert len(status) == 1 and len(events) == 1
    assert "shared_durable_workflow_state" in status[0]
    assert "audit_analytics_telemetry" in events[0]
    assert "allow_ephemeral: [runtime_events]" in events[0]


def test_allowing_only_one_of_two_memory_surfaces_still_refuses_the_other(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, BOTH_ON_MEMORY + "  allow_ephemeral: [runtime_status]\n")
    problems = contract_problems(settings)
    assert problems_about(problems, "runtime_status") == []
    assert len(problems_about(problems, "runtime_events")) == 1


def test_the_opt_in_accepts_memory_and_marks_it_ephemeral(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, BOTH_ON_MEMORY_ALLOWED)
    assert contract_problems(settings) == []
    result = check_contract(settings)
    assert {p.surface.name for p in result} == set(SURFACES)
    for placement in result:
        if placement.surface.name not in ("runtime_status", "runtime_events"):
            assert placement.backend == "main" and placement.ephemeral is False  # not moved
            continue
        assert placement.backend == "mem"
        assert placement.kind is BackendKind.MEMORY
        assert placement.location == "memory"
        assert placement.ephemeral is True


def test_the_opt_in_through_the_default_backend(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        f"""\
        state:
          default_backend: mem
          backends:
            mem: {{type: memory}}
          allow_ephemeral: [{", ".join(SURFACES)}]
        """,
    )
    assert contract_problems(settings) == []
    assert all(p.ephemeral for p in placements(settings))


def test_state_check_refuses_memory_with_exit_3(tmp_path: Path) -> None:
    code, output = state_check(tmp_path, MEMORY_STATUS_ONLY)
    assert code == 3, output
    assert "runtime_status" in output
    assert "shared_durable_workflow_state" in output
    assert "allow_ephemeral" in output


def test_state_check_prints_the_fix_verbatim(tmp_path: Path) -> None:
    code, output = state_check(tmp_path, BOTH_ON_MEMORY)
    assert code == 3, output
    assert "state.allow_ephemeral: [runtime_status]" in output
    assert "state.allow_ephemeral: [runtime_events]" in output


def test_state_check_accepts_memory_with_the_opt_in(tmp_path: Path) -> None:
    code, output = state_check(tmp_path, BOTH_ON_MEMORY_ALLOWED)
    assert code == 0, output
    assert "yes" in output  # the ephemeral column


# --- colocated surfaces ----------------------------------------------------------------------

SPLIT_STATUS_ON_MEMORY = """\
state:
  backends:
    main: {type: sqlite}
    mem:  {type: memory}
  surfaces:
    runtime_status: {backend: mem}
  allow_ephemeral: [runtime_status]
"""

SPLIT_ACROSS_SQLITE = """\
state:
  backends:
    main:  {type: sqlite, path: a.db}
    other: {type: sqlite, path: b.db}
  surfaces:
    runtime_status: {backend: main}
    runtime_events: {backend: other}
"""

SPLIT_EVENTS_ON_MEMORY = """\
state:
  backends:
    main: {type: sqlite}
    mem:  {type: memory}
  surfaces:
    runtime_events: {backend: mem}
  allow_ephemeral: [runtime_events]
"""

SPLIT_ACROSS_TWO_MEMORY = """\
state:
  default_backend: m1
  backends:
    m1: {type: memory}
    m2: {type: memory}
  surfaces:
    runtime_events: {backend: m2}
  allow_ephemeral: [runtime_status, runtime_events]
"""

SPLIT_ACROSS_POSTGRES = f"""\
state:
  mode: shared
  backends:
    pg1: {{type: postgres, dsn: "{UNREACHABLE_DSN}"}}
    pg2: {{type: postgres, dsn: "postgresql://127.0.0.1:1/other"}}
  default_backend: pg1
  surfaces:
    runtime_events: {{backend: pg2}}
"""


def assert_split_refused(problems: list[str]) -> None:
    split = [p for p in problems if "runtime_status" in p and "runtime_events" in p]
    assert len(split) == 1, problems
    assert "same backend" in split[0]


def test_runtime_events_must_follow_runtime_status_away_from_sqlite(tmp_path: Path) -> None:
    assert SURFACES["runtime_events"].colocated_with == "runtime_status"
    assert_split_refused(contract_problems(settings_for(tmp_path, SPLIT_STATUS_ON_MEMORY)))


@pytest.mark.parametrize(
    "text", [SPLIT_ACROSS_SQLITE, SPLIT_ACROSS_POSTGRES], ids=["two-sqlite", "two-postgres"]
)
def test_splitting_colocated_surfaces_is_refused(tmp_path: Path, text: str) -> None:
    settings = settings_for(tmp_path, text)
    assert_split_refused(contract_problems(settings))
    with pytest.raises(ContractViolation):
        check_contract(settings)


@pytest.mark.parametrize(
    "text",
    [SPLIT_EVENTS_ON_MEMORY, SPLIT_ACROSS_TWO_MEMORY],
    ids=["events-on-memory", "two-memory-backends"],
)
def test_splitting_with_runtime_events_on_memory_is_refused(tmp_path: Path, text: str) -> None:
    assert_split_refused(contract_problems(settings_for(tmp_path, text)))


def test_state_check_refuses_a_split_with_exit_3(tmp_path: Path) -> None:
    code, output = state_check(tmp_path, SPLIT_ACROSS_SQLITE)
    assert code == 3, output
    assert "runtime_events" in output and "runtime_status" in output
    assert "same backend" in output


# --- shared mode -----------------------------------------------------------------------------


def test_shared_mode_on_the_default_sqlite_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SHARED_ON_SQLITE)
    with pytest.raises(ContractViolation) as info:
        check_contract(settings)
    shared = [s for s in SURFACES.values() if s.shared]
    assert shared  # both runtime surfaces are shared
    for surface in shared:
        about = problems_about(info.value.problems, surface.name)
        assert len(about) == 1, info.value.problems
        assert surface.state_class.value in about[0]
        assert "postgres" in about[0]
        assert "shared" in about[0]


def test_shared_mode_from_the_environment_is_refused_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTEKEEPER_STATE__MODE", "shared")
    settings = load_settings(workspace=tmp_path / "ws")
    assert len(problems_about(contract_problems(settings), "runtime_status")) == 1
    code, output = state_check(tmp_path, None)
    assert code == 3, output
    assert "postgres" in output


def test_shared_mode_on_postgres_passes_without_connecting(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SHARED_ON_POSTGRES)
    result = check_contract(settings)
    assert {p.surface.name for p in result} == set(SURFACES)
    for placement in result:
        assert placement.backend == "pg"
        assert placement.kind is BackendKind.POSTGRES
        assert placement.ephemeral is False
        assert placement.location == "postgresql://rk:***@127.0.0.1:1/routekeeper"
        assert SECRET not in placement.location


def test_state_check_on_postgres_exits_0_and_hides_the_password(tmp_path: Path) -> None:
    code, output = state_check(tmp_path, SHARED_ON_POSTGRES)
    assert code == 0, output
    assert SECRET not in output


def test_placement_location_hides_a_password_with_a_hash(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        """\
        state:
          default_backend: pg
          backends:
            pg: {type: postgres, dsn: "postgresql://rk:s3#cret@127.0.0.1:1/routekeeper"}
        """,
    )
    for placement in placements(settings):
        assert "cret" not in placement.location
        assert "127.0.0.1" in placement.location


def test_shared_mode_with_allowed_memory_is_still_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SHARED_ON_MEMORY_ALLOWED)
    problems = contract_problems(settings)
    for name in ("runtime_status", "runtime_events"):
        about = problems_about(problems, name)
        assert len(about) == 1, problems
        assert "postgres" in about[0]
        assert "state.mode is shared" in about[0]
    code, output = state_check(tmp_path, SHARED_ON_MEMORY_ALLOWED)
    assert code == 3, output


def test_shared_mode_refuses_only_the_surface_left_on_sqlite(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        f"""\
        state:
          mode: shared
          backends:
            main: {{type: sqlite}}
            pg:   {{type: postgres, dsn: "{UNREACHABLE_DSN}"}}
          surfaces:
            runtime_status: {{backend: pg}}
        """,
    )
    problems = contract_problems(settings)
    assert problems_about(problems, "runtime_status") == []
    events = problems_about(problems, "runtime_events")
    assert any("postgres" in p and "state.mode is shared" in p for p in events), events


def test_local_mode_accepts_postgres(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        f"""\
        state:
          default_backend: pg
          backends:
            pg: {{type: postgres, dsn: "{UNREACHABLE_DSN}"}}
        """,
    )
    assert contract_problems(settings) == []


def test_several_processes_share_sqlite_but_not_memory(tmp_path: Path) -> None:
    """serve --workers N: the workspace's SQLite file is fine for N processes; a durable
    surface on memory is refused even when allowed ephemeral (each would have its own)."""
    sqlite = load_settings(None, workspace=tmp_path / "ws")
    assert contract_problems(sqlite, processes=4) == []
    memory = load_settings(
        None,
        workspace=tmp_path / "ws",
        overrides={
            "state": {"backends": {"main": {"type": "memory"}}, "allow_ephemeral": list(SURFACES)}
        },
    )
    assert contract_problems(memory, processes=1) == []
    problems = contract_problems(memory, processes=2)
    assert len(problems) == len(SURFACES)
    assert all("each of the 2 workers would keep its own copy" in p for p in problems)
    with pytest.raises(ContractViolation):
        check_contract(memory, processes=2)
