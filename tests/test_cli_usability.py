"""What a new user meets first: messages instead of tracebacks, nothing created by read-only
commands, environment variables checked like the file, one --format option, help text that
reads, the replay CLI's filters, and `make run` on the port asked for. Real processes
throughout (the command, `make`, the server); the openai SDK makes the recorded requests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import typer
import yaml
from typer.testing import CliRunner

from routekeeper.cli.main import app
from routekeeper.contract.errors import ConfigError
from routekeeper.settings import load_settings
from routekeeper.testing import ServerProcess
from routekeeper.testing.server import free_port

ROOT = Path(__file__).resolve().parents[1]


def readme() -> str:
    return (ROOT / "README.md").read_text()


# What the README tells a user to run for PostgreSQL; the commands must say the same.
POSTGRES_EXTRA_INSTALL = "pip install 'routekeeper[postgres]'"

# Makes `import psycopg` fail in a child process as it does in an install without the
# `postgres` extra (the `make run` venv), without touching this environment.
NO_PSYCOPG = """\
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEKEEPER_")}
    return {**env, "COLUMNS": "200", **extra}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "routekeeper", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        cwd=cwd,
    )


# --- missing driver --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["doctor"], ["db", "current"], ["db", "check"], ["db", "upgrade"], ["serve", "--port", "0"]],
    ids=" ".join,
)
def test_a_postgres_backend_without_the_driver_names_the_extra(tmp_path, command):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_PSYCOPG)
    config = tmp_path / "pg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state": {
                    "mode": "shared",
                    "backends": {"main": {"type": "postgres", "dsn": "postgresql://127.0.0.1/x"}},
                }
            }
        )
    )
    result = run(
        *command,
        "--config",
        str(config),
        "--workspace",
        str(tmp_path / "ws"),
        env=clean_env(PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert POSTGRES_EXTRA_INSTALL in output, output
    assert "postgres" in output and "psycopg" in output
    assert not (tmp_path / "ws").exists()


def test_the_readme_spells_the_install_command_the_cli_prints():
    assert POSTGRES_EXTRA_INSTALL in readme()


# --- serve flags -------------------------------------------------------------------------------


def test_serve_refuses_an_out_of_range_port_like_the_config_key(tmp_path):
    result = run("serve", "--port", "70000", "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "server.port:" in result.stderr and "65535" in result.stderr, result.stderr
    assert "--port" in result.stderr
    assert not (tmp_path / "ws").exists()
    # The same wording as the key in a file.
    config = tmp_path / "c.yaml"
    config.write_text("server: {port: 70000}\n")
    from_file = run("serve", "--config", str(config), "--workspace", str(tmp_path / "ws"))
    assert from_file.returncode == 2
    line = re.search(r"server\.port: .*", result.stderr)
    assert line and line.group(0) in from_file.stderr, (result.stderr, from_file.stderr)


def test_serve_without_a_model_warns(tmp_path):
    with ServerProcess(workspace=tmp_path / "ws") as server:
        assert "no model is configured" in server.log(), server.log_tail()
        server.terminate()


# --- environment variables ---------------------------------------------------------------------


def test_a_misspelt_section_variable_is_refused(tmp_path):
    result = run("state", "check", env=clean_env(ROUTEKEEPER_SERVR__PORT="9000"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "servr: unknown key" in result.stderr and "ROUTEKEEPER_SERVR__PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("ROUTEKEEPER_SERVR__PORT", "servr"),
        ("ROUTEKEEPER_SERVER__PROT", "server.prot"),
        ("ROUTEKEEPER_REPLAY__DURABLE", "replay.durable"),
        ("ROUTEKEEPER_WORKSPACE__X", "workspace"),
    ],
)
def test_unknown_section_or_key_variables_are_refused_with_the_key_path(
    monkeypatch, tmp_path, name, path
):
    for var in list(os.environ):
        if var.startswith("ROUTEKEEPER_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert any(p.startswith(f"{path}:") and name in p for p in info.value.problems), info.value


def single_word_variables() -> set[str]:
    """Every ROUTEKEEPER_ name without ``__`` the project's code, tests and scripts use."""
    names: set[str] = set()
    files = [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py")]
    files += [*ROOT.joinpath("bench").rglob("*.py"), ROOT / "Makefile", ROOT / ".ci" / "run"]
    for path in files:
        if path.exists():
            names |= set(re.findall(r"\bROUTEKEEPER_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return {n for n in names if "__" not in n}


def test_single_word_variables_are_documented_and_never_refused(monkeypatch, tmp_path):
    names = single_word_variables()
    assert {"ROUTEKEEPER_CONFIG", "ROUTEKEEPER_REQUIRE_SERVICES", "ROUTEKEEPER_URL"} <= names
    text = readme()
    undocumented = sorted(n for n in names if f"`{n}" not in text)
    assert not undocumented, f"not listed in the README: {undocumented}"
    monkeypatch.chdir(tmp_path)
    for name in names - {"ROUTEKEEPER_CONFIG", "ROUTEKEEPER_WORKSPACE"}:
        monkeypatch.setenv(name, "1")
    load_settings()


# --- read-only commands -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["db", "current"], ["db", "check"], ["doctor"]], ids=" ".join)
def test_read_only_commands_on_a_mistyped_workspace_create_nothing(tmp_path, command):
    typo = tmp_path / "wrokspace"
    result = run(*command, "--workspace", str(typo))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no database file" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not typo.exists(), sorted(p.name for p in typo.rglob("*"))


# --- help and --format ---------------------------------------------------------------------------


def all_commands() -> list[tuple[str, Any]]:
    """Every command and group, by its words (typer ships its own click: duck-typed)."""
    out = []

    def walk(prefix: str, command: Any) -> None:
        out.append((prefix, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(f"{prefix} {name}".strip(), sub)

    walk("", typer.main.get_command(app))
    assert len(out) > 15, [name for name, _ in out]
    return out


def test_every_option_and_argument_has_help_that_survives_rendering():
    problems = []
    for name, command in all_commands():
        for param in command.params:
            if getattr(param, "hidden", False) or param.name == "help":
                continue
            text = getattr(param, "help", None) or ""
            if not text.strip():
                problems.append(f"{name} {param.name}: no help")
            # rich would take [...] for markup and drop it, leaving a broken sentence.
            if "[" in text:
                problems.append(f"{name} {param.name}: brackets in {text!r}")
    assert not problems, "\n".join(problems)


PROG = "python -m routekeeper"  # what click names the program run as `python -m routekeeper`
BROKEN_SENTENCE = re.compile(r"\w \.(\s|$)")


def test_help_pages_have_no_broken_sentences():
    """Every page rendered in this process (an interpreter per page cost a second or more
    each); the real command renders the top page the same way."""
    runner = CliRunner()
    pages = {}
    for name, _ in all_commands():
        result = runner.invoke(
            app, [*name.split(), "--help"], env={"COLUMNS": "200"}, prog_name=PROG
        )
        assert result.exit_code == 0, (name, result.output)
        assert not BROKEN_SENTENCE.search(result.stdout), (name, result.stdout)
        pages[name] = result.stdout
    real = run("--help")
    assert real.returncode == 0, real.stderr
    assert real.stdout == pages[""]


def test_one_format_option_everywhere():
    for name, command in all_commands():
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        visible = {o for p in command.params if not getattr(p, "hidden", False) for o in p.opts}
        assert "--json" not in visible, name
        if "--format" in options:
            param = next(p for p in command.params if "--format" in p.opts)
            assert "-f" in param.opts, name
            choices = {member.value for member in type(param.default)}
            assert choices in ({"table", "json"}, {"md", "json"}), (name, choices)


# --- the replay CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay-cli")
    config = root / "c.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            models: [{name: small, backend: {type: echo}}]
            decisions:
              - name: default
                model: small
                plugins: {replay: {capture_request_body: true, capture_response_body: true}}
            """
        )
    )
    with ServerProcess(workspace=root / "ws", config=config) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        for text in ["bonjour café ✓", "plain words here"]:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": text}]
            )
        yield server


def replay(server, *args):
    result = run("replay", *args, "--url", server.url)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.xdist_group("cli-replay-server")  # one worker starts the module's server
def test_replay_list_takes_the_api_filters(replay_server):
    everything = json.loads(replay(replay_server, "list", "--format", "json"))["data"]
    assert len(everything) == 2
    found = json.loads(replay(replay_server, "list", "--q", "café", "--format", "json"))["data"]
    assert [r["id"] for r in found] == [r["id"] for r in everything if r["id"] == found[0]["id"]]
    assert len(found) == 1
    future = json.loads(
        replay(replay_server, "list", "--since", "2100-01-01T00:00:00", "--format", "json")
    )
    assert future["data"] == []
    past = json.loads(replay(replay_server, "list", "--until", "2000-01-01", "--format", "json"))
    assert past["data"] == []
    both = json.loads(
        replay(replay_server, "list", "--since", "2000-01-01", "--until", "2100-01-01", "--json")
    )
    assert len(both["data"]) == 2  # --json still works, as --format json


@pytest.mark.xdist_group("cli-replay-server")
def test_replay_show_prints_non_ascii_as_is(replay_server):
    record = json.loads(replay(replay_server, "list", "--q", "café", "--format", "json"))["data"][0]
    as_json = replay(replay_server, "show", record["id"], "--format", "json")
    assert "café ✓" in as_json and "\\u" not in as_json
    assert json.loads(as_json)["id"] == record["id"]
    table = replay(replay_server, "show", record["id"])
    assert record["id"] in table and "café ✓" in table


# --- make run ----------------------------------------------------------------------------------


def make_run(tmp_path: Path, *make_args: str, **env: str) -> tuple[subprocess.Popen, Path]:
    venv = Path(sys.prefix)
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "make",
                "-C",
                str(ROOT),
                "--no-print-directory",
                "-o",
                f"{venv}/.installed-run",
                "run",
                f"VENV={venv}",
                f"WORKSPACE={tmp_path / 'ws'}",
                *make_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(**env),
            start_new_session=True,
        )
    return proc, log


def wait_ready(proc: subprocess.Popen, log: Path, port: int) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.status_code == 200:
                return httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5).json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing ready on {port}\n{log.read_text()}")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("how", ["environment", "make variable"])
def test_make_run_serves_on_the_port_asked_for(tmp_path, how):
    port = free_port()
    if how == "environment":
        proc, log = make_run(tmp_path, ROUTEKEEPER_SERVER__PORT=str(port))
    else:
        proc, log = make_run(tmp_path, f"PORT={port}", ROUTEKEEPER_SERVER__PORT=str(free_port()))
    try:
        status = wait_ready(proc, log, port)
        me = next(r for r in status["replicas"] if r["current"])
        assert me["listen"] == f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
