"""Settings: one YAML file plus ROUTEKEEPER_* variables, refused with the key path, no secrets."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from routekeeper.cli.main import app
from routekeeper.contract.errors import ConfigError
from routekeeper.settings import Settings, load_settings
from routekeeper.storage.config import MemoryBackend, PostgresBackend, SQLiteBackend, redact_dsn

# The example from issue 2, item 3, verbatim.
ISSUE_EXAMPLE = (Path(__file__).parent / "data" / "state-example.yaml").read_text()

SECRET = "s3cret"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ROUTEKEEPER_* variable from the outer environment, and a scratch working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("ROUTEKEEPER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, text: str, name: str = "routekeeper.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, workspace=tmp_path / "ws")
    return info.value


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unexpected exception: {result.exception!r}\n{result.output}"
    )
    return result.exit_code, ANSI.sub("", result.output)


# --- defaults ------------------------------------------------------------------------------


def test_defaults_without_any_config(tmp_path: Path) -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.workspace == tmp_path / ".routekeeper"
    assert settings.workspace.is_absolute()
    state = settings.state
    assert state.mode == "local"
    assert state.auto_migrate is True
    assert state.default_backend == "main"
    assert list(state.backends) == ["main"]
    main = state.backends["main"]
    assert isinstance(main, SQLiteBackend)
    assert main.path == Path("state.db")
    assert main.synchronous == "FULL"
    assert state.surfaces == {}
    assert state.allow_ephemeral == []
    assert state.backend_name_for("runtime_status") == "main"
    assert state.backend_name_for("runtime_events") == "main"
    assert settings.runtime.heartbeat_seconds == 2.0
    assert settings.server.graceful_timeout_seconds == 10
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.resolve_path(main.path) == tmp_path / ".routekeeper" / "state.db"


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "# nothing configured\n")
    assert load_settings(path) == load_settings()


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.state.mode = "shared"  # type: ignore[misc]


# --- the issue's example ---------------------------------------------------------------------


def test_the_issue_example_loads(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ISSUE_EXAMPLE), workspace=tmp_path / "ws")
    state = settings.state
    assert state.mode == "local"
    assert state.auto_migrate is True
    assert state.default_backend == "main"
    assert list(state.backends) == ["main", "pg", "mem"]
    assert isinstance(state.backends["main"], SQLiteBackend)
    assert state.backends["main"].path == Path("state.db")
    assert isinstance(state.backends["pg"], PostgresBackend)
    assert state.backends["pg"].dsn == "postgresql://127.0.0.1/test"
    assert isinstance(state.backends["mem"], MemoryBackend)
    assert state.surfaces["runtime_status"].backend == "main"
    assert state.allow_ephemeral == []
    assert state.backend_for("runtime_status") is state.backends["main"]
    assert state.backend_for("runtime_events") is state.backends["main"]


def test_backend_values_are_normalised(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        state:
          backends:
            main: {type: sqlite, synchronous: normal, busy_timeout_ms: 250}
        """,
    )
    main = load_settings(path).state.backends["main"]
    assert isinstance(main, SQLiteBackend)
    assert main.synchronous == "NORMAL"
    assert main.busy_timeout_ms == 250


# --- paths and the workspace -----------------------------------------------------------------


def test_relative_sqlite_paths_resolve_against_the_workspace(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        state:
          backends:
            main: {type: sqlite, path: sub/dir/rk.db}
        """,
    )
    workspace = tmp_path / "elsewhere"
    settings = load_settings(path, workspace=workspace)
    main = settings.state.backends["main"]
    assert isinstance(main, SQLiteBackend)
    assert settings.resolve_path(main.path) == workspace / "sub" / "dir" / "rk.db"


def test_absolute_sqlite_paths_stay(tmp_path: Path) -> None:
    absolute = tmp_path / "abs" / "rk.db"
    path = write_config(
        tmp_path,
        f"""\
        state:
          backends:
            main: {{type: sqlite, path: "{absolute}"}}
        """,
    )
    settings = load_settings(path, workspace=tmp_path / "ws")
    main = settings.state.backends["main"]
    assert isinstance(main, SQLiteBackend)
    assert settings.resolve_path(main.path) == absolute


def test_home_relative_paths_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(workspace=tmp_path / "ws")
    assert settings.resolve_path(Path("~/rk.db")) == tmp_path / "home" / "rk.db"


def test_a_relative_workspace_is_made_absolute_against_the_cwd(tmp_path: Path) -> None:
    settings = load_settings(workspace=Path("some/ws"))
    assert settings.workspace == tmp_path / "some" / "ws"
    assert settings.resolve_path(Path("state.db")) == tmp_path / "some" / "ws" / "state.db"


def test_workspace_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEKEEPER_WORKSPACE", str(tmp_path / "from-env"))
    assert load_settings().workspace == tmp_path / "from-env"


def test_workspace_argument_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTEKEEPER_WORKSPACE", str(tmp_path / "from-env"))
    path = write_config(tmp_path, "state: {mode: local}\n")
    settings = load_settings(path, workspace=tmp_path / "from-flag")
    assert settings.workspace == tmp_path / "from-flag"
    assert settings.resolve_path(Path("state.db")) == tmp_path / "from-flag" / "state.db"


def test_workspace_in_the_file_is_refused(tmp_path: Path) -> None:
    error = config_error(tmp_path, f"workspace: {tmp_path / 'ws'}\n")
    assert "workspace" in error.message
    assert "--workspace" in error.message
    assert any(p.startswith("workspace:") for p in error.problems)


# --- environment overrides -------------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(
        tmp_path,
        """\
        state:
          mode: local
          backends:
            main: {type: sqlite, path: kept.db}
        server:
          port: 8081
          host: 0.0.0.0
        runtime:
          heartbeat_seconds: 5
        """,
    )
    monkeypatch.setenv("ROUTEKEEPER_STATE__MODE", "shared")
    monkeypatch.setenv("ROUTEKEEPER_SERVER__PORT", "9001")
    monkeypatch.setenv("ROUTEKEEPER_STATE__AUTO_MIGRATE", "false")
    monkeypatch.setenv("ROUTEKEEPER_RUNTIME__HEARTBEAT_SECONDS", "0.5")
    settings = load_settings(path, workspace=tmp_path / "ws")
    assert settings.state.mode == "shared"
    assert settings.state.auto_migrate is False
    assert settings.server.port == 9001
    assert settings.runtime.heartbeat_seconds == 0.5
    # Keys the environment does not mention keep the file's values (a deep merge).
    assert settings.server.host == "0.0.0.0"
    main = settings.state.backends["main"]
    assert isinstance(main, SQLiteBackend)
    assert main.path == Path("kept.db")


def test_environment_alone_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEKEEPER_SERVER__GRACEFUL_TIMEOUT_SECONDS", "3")
    assert load_settings().server.graceful_timeout_seconds == 3


def test_a_bad_environment_value_is_refused_with_its_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROUTEKEEPER_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert any(p.startswith("server.port:") for p in info.value.problems)


def test_unrelated_routekeeper_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Used by the CLI and CI, not settings keys: they must not be refused as unknown keys.
    monkeypatch.setenv("ROUTEKEEPER_REQUIRE_SERVICES", "1")
    monkeypatch.setenv("ROUTEKEEPER_URL", "http://127.0.0.1:9")
    assert load_settings().state.mode == "local"


# --- refused configurations ------------------------------------------------------------------

REFUSED = {
    "unknown top-level key": ("bogus: 1\n", "bogus"),
    "unknown key under state": ("state: {modee: local}\n", "state.modee"),
    "unknown nested key": (
        """\
        state:
          backends:
            main: {type: sqlite, pathh: x.db}
        """,
        "state.backends.main.pathh",
    ),
    "bad enum value": ("state: {mode: sometimes}\n", "state.mode"),
    "bad synchronous": (
        "state: {backends: {main: {type: sqlite, synchronous: SOMETIMES}}}\n",
        "state.backends.main.synchronous",
    ),
    "bad backend type": ("state: {backends: {main: {type: mongo}}}\n", "state.backends.main"),
    "backend without a type": ("state: {backends: {main: {path: x.db}}}\n", "state.backends.main"),
    "postgres without dsn": (
        "state: {backends: {pg: {type: postgres}}}\n",
        "state.backends.pg.dsn",
    ),
    "bad backend name": ("state: {backends: {1bad: {type: memory}}}\n", "state.backends"),
    "no backends": ("state: {backends: {}}\n", "state.backends"),
    "surface on an unknown backend": (
        """\
        state:
          surfaces:
            runtime_status: {backend: nope}
        """,
        "state.surfaces.runtime_status.backend",
    ),
    "unknown surface": (
        """\
        state:
          surfaces:
            no_such_surface: {backend: main}
        """,
        "state.surfaces.no_such_surface",
    ),
    "unknown key in a surface binding": (
        "state: {surfaces: {runtime_status: {backend: main, backnd: main}}}\n",
        "state.surfaces.runtime_status.backnd",
    ),
    "unknown name in allow_ephemeral": (
        "state: {allow_ephemeral: [runtime_status, no_such_surface]}\n",
        "state.allow_ephemeral.1",
    ),
    "default_backend names a missing backend": (
        "state: {default_backend: missing}\n",
        "state.default_backend",
    ),
    "port out of range": ("server: {port: 70000}\n", "server.port"),
    "bad log level": ("server: {log_level: loud}\n", "server.log_level"),
    "non-positive heartbeat": ("runtime: {heartbeat_seconds: 0}\n", "runtime.heartbeat_seconds"),
}


@pytest.mark.parametrize(("text", "key_path"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_configs_name_the_key_path(tmp_path: Path, text: str, key_path: str) -> None:
    error = config_error(tmp_path, text)
    assert any(p.startswith(f"{key_path}:") for p in error.problems), error.problems
    assert f"  - {key_path}:" in error.message
    assert str(tmp_path / "routekeeper.yaml") in error.message
    assert error.details["problems"] == error.problems


def test_refusals_say_what_is_wrong(tmp_path: Path) -> None:
    assert "sometimes" in config_error(tmp_path, "state: {mode: sometimes}\n").message
    assert "mongo" in config_error(tmp_path, "state: {backends: {main: {type: mongo}}}\n").message
    assert (
        "'nope'"
        in config_error(tmp_path, "state: {surfaces: {runtime_status: {backend: nope}}}\n").message
    )
    error = config_error(tmp_path, "state: {allow_ephemeral: [no_such_surface]}\n")
    assert "no_such_surface" in error.message
    assert "runtime_status" in error.message  # the registered names are listed


def test_every_problem_is_listed(tmp_path: Path) -> None:
    error = config_error(
        tmp_path,
        """\
        bogus: 1
        server: {port: -1}
        state:
          backends:
            main: {type: sqlite, pathh: x.db}
        """,
    )
    paths = {p.split(":", 1)[0] for p in error.problems}
    assert {"bogus", "server.port", "state.backends.main.pathh"} <= paths


def test_several_reference_problems_are_listed(tmp_path: Path) -> None:
    error = config_error(
        tmp_path,
        """\
        state:
          default_backend: missing
          surfaces:
            runtime_status: {backend: nope}
          allow_ephemeral: [bogus]
        """,
    )
    paths = {p.split(":", 1)[0] for p in error.problems}
    assert paths == {
        "state.default_backend",
        "state.surfaces.runtime_status.backend",
        "state.allow_ephemeral.0",
    }


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    error = config_error(
        tmp_path,
        """\
        state:
          mode: local
          auto_migrate: true: false
        """,
    )
    assert "YAML" in error.message
    assert "line 3" in error.message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    assert str(missing) in info.value.message
    assert "does not exist" in info.value.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_non_mapping_top_level_is_refused(tmp_path: Path, text: str) -> None:
    error = config_error(tmp_path, text)
    assert "(top level)" in error.message
    assert "mapping" in error.message


# --- secrets ---------------------------------------------------------------------------------

SECRET_CONFIGS = {
    "bad pool_size": f"""\
        state:
          backends:
            pg: {{type: postgres, dsn: "postgresql://u:{SECRET}@127.0.0.1/db", pool_size: 0}}
        """,
    "bad scheme": f"""\
        state:
          backends:
            pg: {{type: postgres, dsn: "mysql://u:{SECRET}@h/db"}}
        """,
    "unknown key beside the dsn": f"""\
        state:
          backends:
            pg: {{type: postgres, dsn: "postgresql://u:{SECRET}@127.0.0.1/db", dsnn: x}}
        """,
    "bad type beside the dsn": f"""\
        state:
          backends:
            pg: {{type: postgress, dsn: "postgresql://u:{SECRET}@127.0.0.1/db"}}
        """,
    "dsn without a scheme": f"""\
        state:
          backends:
            pg: {{type: postgres, dsn: "{SECRET}"}}
        """,
}


@pytest.mark.parametrize("text", list(SECRET_CONFIGS.values()), ids=list(SECRET_CONFIGS))
def test_dsn_passwords_never_appear_in_config_errors(tmp_path: Path, text: str) -> None:
    error = config_error(tmp_path, text)
    assert any(p.startswith("state.backends.pg") for p in error.problems), error.problems
    assert SECRET not in error.message
    assert SECRET not in str(error)
    assert SECRET not in repr(error.details)


def test_the_bad_scheme_error_shows_the_redacted_dsn(tmp_path: Path) -> None:
    error = config_error(tmp_path, SECRET_CONFIGS["bad scheme"])
    assert any(p.startswith("state.backends.pg.dsn:") for p in error.problems)
    assert "mysql://u:***@h/db" in error.message


def test_dsn_passwords_from_the_environment_are_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path,
        """\
        state:
          backends:
            pg: {type: postgres, dsn: "postgresql://127.0.0.1/test"}
        """,
    )
    monkeypatch.setenv("ROUTEKEEPER_STATE__BACKENDS__PG__DSN", f"mysql://u:{SECRET}@h/db")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert any(p.startswith("state.backends.pg.dsn:") for p in info.value.problems)
    assert SECRET not in info.value.message


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        (f"postgresql://u:{SECRET}@127.0.0.1/db", "postgresql://u:***@127.0.0.1/db"),
        (
            f"postgresql://user:{SECRET}@db.example:5432/rk?sslmode=require",
            "postgresql://user:***@db.example:5432/rk?sslmode=require",
        ),
        (f"postgresql://u:{SECRET}@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        (f"postgresql://:{SECRET}@h/db", "postgresql://:***@h/db"),
    ],
)
def test_redact_dsn_masks_passwords(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted
    assert SECRET not in redact_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://127.0.0.1/test",
        "postgresql://u@127.0.0.1:5432/db",
        "postgresql://u@h/db?sslmode=require",
        "postgresql:///db?host=/run/postgresql",
    ],
)
def test_redact_dsn_leaves_password_less_dsns_alone(dsn: str) -> None:
    assert redact_dsn(dsn) == dsn


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:s3#cret@127.0.0.1/db",
        "postgresql://u:s3?cret@127.0.0.1/db",
        "postgresql://u:s3/cret@127.0.0.1/db",
        "postgresql://u:s3%40cret@127.0.0.1/db",
    ],
)
def test_redact_dsn_masks_passwords_with_url_delimiters(dsn: str) -> None:
    # SQLAlchemy (which makes the connection) reads all of these as the password.
    redacted = redact_dsn(dsn)
    assert "cret" not in redacted
    assert "***" in redacted and "127.0.0.1" in redacted


def test_redact_dsn_masks_a_password_with_an_unencoded_at_sign() -> None:
    assert redact_dsn(f"postgres://u:p@{SECRET}@h/db") == "postgres://u:***@h/db"


def test_redact_dsn_masks_a_password_query_parameter() -> None:
    redacted = redact_dsn(f"postgresql://h/db?sslmode=require&password={SECRET}")
    assert redacted == "postgresql://h/db?sslmode=require&password=***"


def test_postgres_backend_exposes_a_redacted_dsn() -> None:
    backend = PostgresBackend(dsn=f"postgresql://u:{SECRET}@127.0.0.1/db")
    assert backend.redacted_dsn == "postgresql://u:***@127.0.0.1/db"
    assert backend.dsn.endswith(f"{SECRET}@127.0.0.1/db")  # the real one is still usable


# --- the CLI ---------------------------------------------------------------------------------


def test_state_check_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        state:
          backends:
            main: {type: sqlite, pathh: x.db}
        """,
    )
    code, output = run_cli(
        "state", "check", "--config", str(path), "--workspace", str(tmp_path / "ws")
    )
    assert code == 2, output
    assert "state.backends.main.pathh" in output
    assert not (tmp_path / "ws").exists()


def test_state_check_exits_2_on_a_missing_config(tmp_path: Path) -> None:
    code, output = run_cli(
        "state", "check", "--config", str(tmp_path / "nope.yaml"), "--workspace", str(tmp_path)
    )
    assert code == 2, output
    assert "nope.yaml" in output


def test_state_check_exits_2_on_invalid_yaml(tmp_path: Path) -> None:
    path = write_config(tmp_path, "state:\n  mode: [local\n")
    code, output = run_cli("state", "check", "--config", str(path), "--workspace", str(tmp_path))
    assert code == 2, output
    assert "line" in output


def test_state_check_never_prints_the_dsn_password(tmp_path: Path) -> None:
    path = write_config(tmp_path, SECRET_CONFIGS["bad pool_size"])
    code, output = run_cli(
        "state", "check", "--config", str(path), "--workspace", str(tmp_path / "ws")
    )
    assert code == 2, output
    assert "state.backends.pg.pool_size" in output
    assert SECRET not in output


def test_state_check_reports_environment_errors_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTEKEEPER_STATE__MODE", "sometimes")
    code, output = run_cli("state", "check", "--workspace", str(tmp_path / "ws"))
    assert code == 2, output
    assert "state.mode" in output


def test_state_check_survives_markup_like_values_in_errors(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'state: {mode: "[/x]"}\n')
    result = CliRunner().invoke(
        app, ["state", "check", "--config", str(path), "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "[/x]" in result.output
