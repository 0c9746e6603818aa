"""The fake upstream (``routekeeper.testing.FakeUpstream``) in a process of its own, so that a
benchmark can count its CPU apart from the load generator's and the server's.

    with UpstreamProcess(models=["small", "large"], stream_chunks=8) as upstream:
        upstream.base_url, upstream.pid

Run as a script it serves until its stdin closes (the benchmark that started it exited) or it
gets SIGTERM; its first line on stdout is the port.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from routekeeper.testing import FakeUpstream


class UpstreamProcess:
    def __init__(self, *, models: list[str], stream_chunks: int, reply: str | None = None) -> None:
        self.models = models
        self.stream_chunks = stream_chunks
        self.reply = reply
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> UpstreamProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--stream-chunks",
                str(self.stream_chunks),
                *(["--reply", self.reply] if self.reply is not None else []),
                *self.models,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"the fake upstream process did not start: {line!r}")
        self.port = int(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def one_model_config(directory: Path, base_url: str, **sections: Any) -> Path:
    """A config file in ``directory`` routing everything to model ``m`` at ``base_url`` (an
    OpenAI-compatible upstream such as the fake one), logging warnings only; ``sections`` are
    added at the top level (e.g. ``replay={"durability": "batch"}``)."""
    config = {
        "models": [
            {"name": "m", "backend": {"type": "openai", "base_url": base_url, "model": "m"}}
        ],
        "decisions": [{"name": "default", "model": "m"}],
        "server": {"log_level": "warning"},
        **sections,
    }
    path = directory / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--stream-chunks", type=int, default=8)
    parser.add_argument("--reply", default=None, help="a fixed reply (default: the echo)")
    args = parser.parse_args()
    with FakeUpstream(models=args.models, stream_chunks=args.stream_chunks, remember=0) as upstream:
        print(upstream.port, flush=True)
        sys.stdin.read()  # until EOF: the benchmark that started it is gone


if __name__ == "__main__":
    main()
