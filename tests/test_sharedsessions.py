"""Several server processes: sessions in one shared SQLite file, `nextchar serve --workers N` (issue 14)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from nextchar import engine
from nextchar.adapt import SessionStore
from nextchar.errors import UserError
from nextchar.serve import server_process
from nextchar.sharedsessions import SharedSessionStore

torch.set_num_threads(1)
PREFIXES = ["", "Hello wor", "Привет, ми", "The quick brown fox ju", "vizqubel vizq"]


@pytest.fixture(scope="module")
def pred(tiny_run):
    return engine.load(tiny_run)


def test_shared_store_predicts_like_the_memory_store(pred, tmp_path):
    mem, db = SessionStore(pred, max_sessions=3), SharedSessionStore(pred, tmp_path / "s.db", max_sessions=3)
    for store in (mem, db):
        store.get("a").observe("vizqubel is a word I made up. vizqubel again.")
        store.get("a").observe("and a second message")
        store.get("b").observe("Привет, мир")
        store.get("c").observe("Le cha\u0302teau\r\nest  vieux\t ")  # normalized as every prefix is
    np.testing.assert_array_equal(db.get("c")._history, mem.get("c").observed("Le château\nest vieux"))
    for sid in ("a", "b", "c"):
        want, got = mem.get(sid), db.get(sid)
        assert got.history_chars == want.history_chars
        np.testing.assert_array_equal(got.dist_batch(PREFIXES), want.dist_batch(PREFIXES))
    # bounded like the memory store: the least recently used goes first
    for store in (mem, db):
        store.get("d")
    assert len(db) == len(mem) == 3 and "a" not in db and "a" not in mem and "d" in db
    with pytest.raises(UserError, match="session '7'"):
        db.get(7)
    assert db.forget("b") and not db.forget("b") and db.get("b").history_chars == 0
    assert (tmp_path / "s.db").stat().st_mode & 0o777 == 0o600  # users' text: private


def test_observes_from_two_processes_at_once_add_up(pred, tmp_path):
    path = tmp_path / "s.db"
    SharedSessionStore(pred, path).get("u")
    pids = []
    for who in "xy":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                store = SharedSessionStore(pred, path)
                for _ in range(40):
                    store.get("u").observe(who * 5)  # START + 5 characters: 6 ids each
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(p, 0)[1] == 0 for p in pids)
    assert SharedSessionStore(pred, path).get("u").history_chars == 2 * 40 * 6  # no observe was lost


def test_two_servers_sharing_a_sessions_file_answer_alike(tiny_run, tmp_path):
    """Several `nextchar serve` behind a proxy: the user's text is the same whichever of them answers."""
    db = tmp_path / "sessions.db"
    with server_process(tiny_run, sessions_db=db) as a, server_process(tiny_run, sessions_db=db) as b, \
            server_process(tiny_run) as plain:
        ca, cb, cp = httpx.Client(base_url=a), httpx.Client(base_url=b), httpx.Client(base_url=plain)
        said = {"session": "u1", "text": "vizqubel is a word I made up. vizqubel again, vizqubel."}
        assert ca.post("/v1/session/observe", json=said).json()["history_chars"] > 0
        assert cp.post("/v1/session/observe", json=said).status_code == 200  # one process, in memory
        for prefix in ("viz", "I like vizq", ""):
            body = {"prefix": prefix, "k": 5, "session": "u1"}
            ra, rb, rp = (c.post("/v1/predict", json=body).json() for c in (ca, cb, cp))
            assert ra == rb and ra["predictions"] == rp["predictions"] and rb["adapted"]
        for c in (cb, cp):
            assert c.post("/v1/session/forget", json={"session": "u1"}).status_code == 200
        body = {"prefix": "viz", "k": 5, "session": "u1"}
        ra, rp = ca.post("/v1/predict", json=body).json(), cp.post("/v1/predict", json=body).json()
        assert ra["predictions"] == rp["predictions"]  # forgotten on b: forgotten on a too


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_workers_share_sessions_and_a_dead_worker_is_replaced(tiny_run):
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen([sys.executable, "-m", "nextchar", "serve", "--run", str(tiny_run), "--port", "0",
                             "--workers", "2", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONPATH=src))
    try:
        line = proc.stdout.readline()
        assert "with 2 workers" in line, line
        url = line.split(" at ")[1].split()[0]
        workers = _children(proc.pid)
        assert len(workers) == 2
        httpx.post(url + "v1/session/observe", json={"session": "w", "text": "vizqubel vizqubel vizqubel"})
        answers = {str(httpx.post(url + "v1/predict", json={"prefix": "a vizq", "session": "w"}).json())
                   for _ in range(30)}  # a new connection each: both workers answer
        assert len(answers) == 1 and "'adapted': True" in answers.pop()
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 2 or workers[0] in _children(proc.pid):
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        assert all(httpx.get(url + "healthz").status_code == 200 for _ in range(10))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]  # no orphaned worker


def test_bad_run_with_workers_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from nextchar.cli import app

    r = CliRunner().invoke(app, ["serve", "--run", str(tmp_path), "--port", "0", "--workers", "2"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
