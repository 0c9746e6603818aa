"""Liveness locks: held while the holder lives, free the moment it dies."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from routekeeper.contract.errors import StorageError
from routekeeper.contract.runtime import ReplicaPhase, ReplicaRecord
from routekeeper.storage.liveness import FileLiveness, PostgresLiveness
from routekeeper.storage.types import utcnow


def record(replica_id: str, host: str | None = None) -> ReplicaRecord:
    now = utcnow()
    return ReplicaRecord(
        id=replica_id,
        phase=ReplicaPhase.READY,
        host=host or socket.gethostname(),
        pid=1,
        listen=None,
        version="t",
        started_at=now,
        heartbeat_at=now,
        updated_at=now,
    )


async def test_file_lock_is_held_until_released(tmp_path):
    mine = FileLiveness(tmp_path / "replicas")
    await mine.acquire("rep_a")
    observer = FileLiveness(tmp_path / "replicas")
    assert await observer.is_alive(record("rep_a")) is True
    with pytest.raises(StorageError, match="already held"):
        await FileLiveness(tmp_path / "replicas").acquire("rep_a")
    await mine.release()
    assert not (tmp_path / "replicas" / "rep_a.lock").exists()
    assert await observer.is_alive(record("rep_a")) is None  # no file: cannot tell


async def test_file_lock_of_a_killed_process_is_free(tmp_path):
    directory = tmp_path / "replicas"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys, time\n"
            "from pathlib import Path\n"
            "from routekeeper.storage.liveness import FileLiveness\n"
            f"asyncio.run(FileLiveness(Path({str(directory)!r})).acquire('rep_k'))\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        observer = FileLiveness(directory)
        assert await observer.is_alive(record("rep_k")) is True
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert (directory / "rep_k.lock").exists()
        assert await observer.is_alive(record("rep_k")) is False
        await observer.forget(record("rep_k"))
        assert not (directory / "rep_k.lock").exists()
    finally:
        child.kill()
        child.wait()


async def test_file_lock_of_another_host_cannot_be_judged(tmp_path):
    observer = FileLiveness(tmp_path)
    (tmp_path / "rep_x.lock").write_text("")
    assert await observer.is_alive(record("rep_x", host="elsewhere")) is None


@pytest.mark.postgres
async def test_postgres_advisory_lock_is_free_once_its_holder_is_killed(postgres_dsn):
    from routekeeper.settings import PostgresBackend
    from routekeeper.storage.database import Database

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, time\n"
            "from routekeeper.settings import PostgresBackend\n"
            "from routekeeper.storage.database import Database\n"
            "from routekeeper.storage.liveness import PostgresLiveness\n"
            "async def main():\n"
            f"    db = Database('pg', PostgresBackend(dsn={postgres_dsn!r}))\n"
            "    await db.open()\n"
            "    lock = PostgresLiveness(db)\n"
            "    await lock.acquire('rep_p')\n"
            "    await lock.ensure_held()\n"
            "    print('held', flush=True)\n"
            "    await asyncio.sleep(60)\n"
            "asyncio.run(main())\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    observer_db = Database("pg", PostgresBackend(dsn=postgres_dsn))
    await observer_db.open()
    try:
        assert child.stdout.readline().strip() == "held"
        observer = PostgresLiveness(observer_db)
        assert await observer.is_alive(record("rep_p")) is True
        assert await observer.is_alive(record("rep_other")) is False
        with pytest.raises(StorageError, match="already held"):
            await PostgresLiveness(observer_db).acquire("rep_p")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 5
        while await observer.is_alive(record("rep_p")):
            assert time.monotonic() < deadline, "the server kept the dead session's lock"
            time.sleep(0.05)
        # now free: a new holder can take it, and release gives it back
        again = PostgresLiveness(observer_db)
        await again.acquire("rep_p")
        assert await observer.is_alive(record("rep_p")) is True
        await again.release()
        assert await observer.is_alive(record("rep_p")) is False
    finally:
        child.kill()
        child.wait()
        await observer_db.close()
