"""Liveness locks: held while the holder lives, free the moment it dies."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from routekeeper.contract.errors import StorageError
from routekeeper.contract.runtime import ReplicaPhase, ReplicaRecord
from routekeeper.storage.liveness import (
    ADVISORY_NAMESPACE,
    SESSION_NAME_PREFIX,
    FileLiveness,
    IdentityTaken,
    LockCheck,
    PostgresLiveness,
    advisory_key,
)
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
        child.stdout.close()


async def test_file_lock_of_another_host_cannot_be_judged(tmp_path):
    observer = FileLiveness(tmp_path)
    (tmp_path / "rep_x.lock").write_text("")
    assert await observer.is_alive(record("rep_x", host="elsewhere")) is None


@pytest.mark.postgres
async def test_postgres_advisory_lock_is_free_once_its_holder_is_killed(postgres_dsn):
    from routekeeper.storage.config import PostgresBackend
    from routekeeper.storage.database import Database

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, time\n"
            "from routekeeper.storage.config import PostgresBackend\n"
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
        child.stdout.close()
        await observer_db.close()


async def test_a_free_flock_is_proof_and_stays_free_when_stopped_was_not_stored(tmp_path):
    directory = tmp_path / "replicas"
    assert FileLiveness(directory).free_lock_is_proof is True
    lock = FileLiveness(directory)
    await lock.acquire("rep_s")
    assert await lock.ensure_held() is LockCheck.HELD
    # the final `stopped` write failed: the file stays, free, so the next sweep can judge
    await lock.release(stopped=False)
    assert await FileLiveness(directory).is_alive(record("rep_s")) is False


def _admin(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def _end_sessions(dsn: str, application_name: str) -> int:
    """End the sessions named ``application_name`` on this test's own database (another
    test, or another run, may use the same replica ids on its database)."""
    with _admin(dsn) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database() "
                "AND pid <> pg_backend_pid()",
                (application_name,),
            ).fetchall()
        )


def _hold_key(dsn: str, replica_id: str, application_name: str):
    """Another session taking ``replica_id``'s advisory lock under ``application_name``."""
    conn = _admin(dsn)
    conn.execute("SELECT set_config('application_name', %s, false)", (application_name,))
    got = conn.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", (ADVISORY_NAMESPACE, advisory_key(replica_id))
    ).fetchone()[0]
    assert got
    return conn


async def _wait_free(observer: PostgresLiveness, replica_id: str) -> None:
    deadline = time.monotonic() + 5
    while await observer.is_alive(record(replica_id)):
        assert time.monotonic() < deadline, "the server kept the ended session's lock"
        await asyncio.sleep(0.05)


@pytest.fixture
async def pg_db(postgres_dsn):
    from routekeeper.storage.config import PostgresBackend
    from routekeeper.storage.database import Database

    db = Database("pg", PostgresBackend(dsn=postgres_dsn))
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.mark.postgres
async def test_postgres_lock_of_a_lost_session_is_taken_back_not_given_up(postgres_dsn, pg_db):
    """The session ends under a live holder (as in a network cut): the lock is free, which
    is why it is no proof of death; the holder's next check takes it again."""
    lock, observer = PostgresLiveness(pg_db), PostgresLiveness(pg_db)
    assert lock.free_lock_is_proof is False
    await lock.acquire("rep_cut")
    assert await lock.ensure_held() is LockCheck.HELD
    assert _end_sessions(postgres_dsn, f"{SESSION_NAME_PREFIX}rep_cut") == 1
    await _wait_free(observer, "rep_cut")
    assert await lock.ensure_held() is LockCheck.RETAKEN
    assert await observer.is_alive(record("rep_cut")) is True
    assert await lock.ensure_held() is LockCheck.HELD
    await lock.release()
    assert await observer.is_alive(record("rep_cut")) is False


@pytest.mark.postgres
async def test_postgres_lock_still_held_by_an_earlier_session_is_waited_for(postgres_dsn, pg_db):
    """After a cut the server may keep the old session (and its lock) for a while: the
    replica is still seen alive, and takes the lock over once that session ends."""
    lock = PostgresLiveness(pg_db)
    await lock.acquire("rep_old")
    _end_sessions(postgres_dsn, f"{SESSION_NAME_PREFIX}rep_old")
    await _wait_free(PostgresLiveness(pg_db), "rep_old")
    earlier = _hold_key(postgres_dsn, "rep_old", f"{SESSION_NAME_PREFIX}rep_old")
    try:
        assert await lock.ensure_held() is LockCheck.PENDING
        assert await PostgresLiveness(pg_db).is_alive(record("rep_old")) is True
    finally:
        earlier.close()
    await _wait_free(PostgresLiveness(pg_db), "rep_old")
    assert await lock.ensure_held() is LockCheck.RETAKEN
    await lock.release()


@pytest.mark.postgres
async def test_postgres_lock_held_by_another_replica_is_identity_taken(postgres_dsn, pg_db):
    lock = PostgresLiveness(pg_db)
    await lock.acquire("rep_me")
    _end_sessions(postgres_dsn, f"{SESSION_NAME_PREFIX}rep_me")
    await _wait_free(PostgresLiveness(pg_db), "rep_me")
    other = _hold_key(postgres_dsn, "rep_me", f"{SESSION_NAME_PREFIX}rep_other")
    try:
        with pytest.raises(IdentityTaken, match="rep_other"):
            await lock.ensure_held()
    finally:
        other.close()
        await lock.release()
