"""Sessions that several server processes share: the remembered text of each session in one SQLite file.

A session is what /v1/session/observe told the server (the user's finished messages, at most max_text ids);
the prefix comes with every request. With one process that text lives in memory (adapt.SessionStore); with
several (`nextchar serve --workers N`, or several `nextchar serve --sessions-db PATH` behind a proxy) any of them
may answer a user's next request, so the text must not live in one of them: it lives in this store, and every
process reads it when it predicts. A session's answer is then the same whichever process gives it.

SQLite in WAL mode: readers never wait for the writer, and each observe is one transaction (read, append,
write), so two processes observing the same session at once lose nothing. The file holds users' text: it is
created private (0600), and `nextchar serve --workers` deletes its own when it stops.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from nextchar.adapt import MAX_SESSIONS, MAX_TEXT, SESSION_ID, WEIGHTS, AdaptiveSession, Weights
from nextchar.engine.base import Predictor
from nextchar.errors import UserError, check_int

_SCHEMA = """CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    history BLOB NOT NULL,  -- little-endian uint32 ids of the observed text (each piece after START)
    used REAL NOT NULL      -- last use, for dropping the least recently used beyond max_sessions
)"""


class StoredSession(AdaptiveSession):
    """An AdaptiveSession whose history is read from, and written to, a SharedSessionStore."""

    def __init__(self, store: SharedSessionStore, sid: str):
        super().__init__(store.pred, store.weights, store.max_text)
        self.store, self.sid = store, sid

    @property  # type: ignore[override]
    def _history(self) -> np.ndarray:
        return self.store.history(self.sid)

    @_history.setter
    def _history(self, value: np.ndarray) -> None:
        pass  # AdaptiveSession.__init__ sets an empty history: the stored one stands

    def observe(self, text: str) -> None:
        self.store.append(self.sid, self.observed(text))  # normalized as every prefix is (AdaptiveSession)

    def forget(self) -> None:
        self.store.forget(self.sid)


class SharedSessionStore:
    """adapt.SessionStore's interface over an SQLite file (see the module docstring); thread- and process-safe."""

    def __init__(self, predictor: Predictor, path: str | Path, max_sessions: int = MAX_SESSIONS,
                 max_text: int = MAX_TEXT, weights: Weights = WEIGHTS):
        check_int(max_sessions, "max_sessions")
        self.pred, self.path = predictor, Path(path)
        self.max_sessions, self.max_text, self.weights = max_sessions, max_text, weights
        self._local = threading.local()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # private before SQLite writes user text
            os.close(fd)
            with self._db() as db:
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"{self.path}: cannot open the session store ({e})") from None

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread: sqlite3 connections must not cross threads
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a session's text may lose its last write on power loss
            self._local.db = db
        return db

    def get(self, sid: str) -> StoredSession:
        """The session with this id, created empty if new (or dropped as least recently used)."""
        if not isinstance(sid, str) or not SESSION_ID.fullmatch(sid):
            raise UserError(f"session {str(sid)[:80]!r}: use 1 to 64 letters, digits, '-' or '_'")
        db = self._db()
        now = time.time()
        if db.execute("UPDATE sessions SET used = ? WHERE id = ?", (now, sid)).rowcount == 0:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?)", (sid, b"", now))
                db.execute("DELETE FROM sessions WHERE id IN (SELECT id FROM sessions ORDER BY used DESC "
                           "LIMIT -1 OFFSET ?)", (self.max_sessions,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return StoredSession(self, sid)

    def history(self, sid: str) -> np.ndarray:
        """The session's remembered ids (empty when it was forgotten or dropped)."""
        row = self._db().execute("SELECT history FROM sessions WHERE id = ?", (sid,)).fetchone()
        ids = np.frombuffer(row[0], dtype="<u4") if row else np.zeros(0, dtype="<u4")
        return ids.astype(self.pred.vocab.dtype)

    def append(self, sid: str, ids: np.ndarray) -> None:
        """Add observed ids to a session, keeping its last max_text (one transaction: concurrent appends add up)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT history FROM sessions WHERE id = ?", (sid,)).fetchone()
            old = np.frombuffer(row[0], dtype="<u4") if row else np.zeros(0, dtype="<u4")
            new = np.concatenate([old, ids.astype("<u4")])[-self.max_text:]
            db.execute("INSERT INTO sessions VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET history = excluded.history, "
                       "used = excluded.used", (sid, new.tobytes(), time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def forget(self, sid: str) -> bool:
        """Drop a session and its text; False when it was not there."""
        return self._db().execute("DELETE FROM sessions WHERE id = ?", (sid,)).rowcount > 0

    def __len__(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM sessions").fetchone()[0])

    def __contains__(self, sid: object) -> bool:
        return isinstance(sid, str) and self._db().execute(
            "SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone() is not None
