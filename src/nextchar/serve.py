"""HTTP service: JSON prediction API (plain or adapted per session), a health check and the web keyboard page."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextchar import engine, keyboard
from nextchar.adapt import MAX_SESSIONS, MAX_TEXT, WEIGHTS, AdaptiveSession, SessionStore, Weights
from nextchar.complete import Completer
from nextchar.connguard import Guard, Limits, guarded_protocol
from nextchar.engine.base import MOSTLY_UNKNOWN, UNKNOWN_WINDOW, Predictor, rank
from nextchar.errors import UserError, check_int
from nextchar.files import dumps

MAX_BODY = 64 * 1024  # bytes of request body; a prefix longer than this is useless to any model anyway
MAX_K = 10
MAX_BATCH = 1000  # prefixes per batch request
BATCH_ROWS = 512  # most prefixes one batch of requests takes
# Rows per forward pass: a window of 64 is 64 positions, and past a few dozen rows a pass costs as much per row
# (the default model: 4.2 ms/row at 8 rows, 4.0 at 32, 6.6 at 128 on this project's CPU), while its activations
# grow with the rows; 64 keeps a pass's memory near 10 MB.
FORWARD_ROWS = 64
STATIC = Path(__file__).parent / "static"
log = logging.getLogger("nextchar.serve")

SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
SESSION_HELP = ("Adapt to this user: 1-64 letters, digits, '-' or '_', chosen by the client (random). The "
                "session's cache reads the text it was told with /v1/session/observe, then this prefix.")


# ------------------------------------------------------------------------------------------ the contract


class Strict(BaseModel):
    # "3" for k or null for prefix are client bugs worth a clear 422, not something to guess around
    model_config = ConfigDict(strict=True, extra="forbid")


class PredictRequest(Strict):
    prefix: str = Field(description="Text typed so far (any Unicode, may be empty).", examples=["Hello wo"])
    k: int = Field(3, ge=1, le=MAX_K, description="How many characters to suggest.")
    session: SessionId | None = Field(None, description=SESSION_HELP)


class BatchRequest(Strict):
    prefixes: list[str] = Field(max_length=MAX_BATCH, description=f"Up to {MAX_BATCH} prefixes.")
    k: int = Field(3, ge=1, le=MAX_K)
    session: SessionId | None = Field(None, description=SESSION_HELP)


class CompleteRequest(Strict):
    prefix: str = Field(description="Text typed so far (any Unicode, may be empty).", examples=["Hello wo"])
    k: int = Field(3, ge=1, le=MAX_K, description="How many word completions to suggest.")
    session: SessionId | None = Field(None, description=SESSION_HELP)


class ObserveRequest(Strict):
    session: SessionId
    text: str = Field(description="Text the user wrote (e.g. a finished message), remembered for this session.")


class ForgetRequest(Strict):
    session: SessionId


class Prediction(BaseModel):
    char: str
    prob: float


UNKNOWN_HELP = (f"Share of the last {UNKNOWN_WINDOW} characters of the prefix (as the model reads it) that the "
                "model's vocabulary lacks.")
MOSTLY_HELP = (f"unknown_share >= {MOSTLY_UNKNOWN}: the context is mostly outside what the model knows (another "
               "script or language), its suggestions are guesses; a client may fall back to something else.")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="Best first.")
    model: str = Field(description="The run id of the model.")
    adapted: bool = Field(description="Whether a session's cache was mixed in.")
    unknown_share: float = Field(description=UNKNOWN_HELP)
    mostly_unknown: bool = Field(description=MOSTLY_HELP)


class Completion(BaseModel):
    text: str = Field(description="The rest of the current word (accepting it types this, then a space).")
    prob: float = Field(description="The model's probability of these characters followed by a word end.")


class CompleteResponse(BaseModel):
    completions: list[Completion] = Field(description="Best first; fewer than k when fewer exist.")
    model: str
    adapted: bool
    unknown_share: float = Field(description=UNKNOWN_HELP)
    mostly_unknown: bool = Field(description=MOSTLY_HELP)


class BatchResponse(BaseModel):
    predictions: list[list[Prediction]] = Field(description="One list per prefix, in order.")
    model: str
    adapted: bool
    unknown_share: list[float] = Field(description="Per prefix, in order: " + UNKNOWN_HELP)
    mostly_unknown: list[bool] = Field(description="Per prefix, in order: " + MOSTLY_HELP)


class SessionResponse(BaseModel):
    session: str
    history_chars: int = Field(description="Characters of remembered text (oldest dropped beyond a limit).")


class ScriptKeysModel(BaseModel):
    script: str = Field(description="Unicode script of these letters (\"Latin\", \"Hebrew\", ...).")
    letters: list[str] = Field(description="Main keys, most frequent first; one case (Shift gives the other).")
    more: list[str] = Field(description="The script's rarer letters and marks.")
    punctuation: list[str] = Field(description="Symbols that most often follow this script's letters.")
    symbols: list[str] = Field(description="Digits, then every other symbol, most used first.")


class KeysResponse(BaseModel):
    model: str
    languages: list[str] = Field(description="Language codes the model was trained on (empty if unknown).")
    max_text: int = Field(description="Characters of text a session remembers (observe keeps the last ones).")
    max_body: int = Field(description="Largest request body in bytes (larger ones get 413).")
    scripts: list[ScriptKeysModel] = Field(description="Scripts with more letters first.")


class Health(BaseModel):
    status: str
    model: str
    sessions: int
    cpu_s: float = Field(description="CPU seconds this server process has used (all threads), for load tests.")


# ------------------------------------------------------------------------------------------ batching


@dataclass
class Job:
    """One request's work for the model thread."""

    prefixes: list[str]
    k: int
    session: AdaptiveSession | None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    work: Callable[[], Any] | None = None  # run alone on the model thread instead (word completion)
    loop: asyncio.AbstractEventLoop | None = None  # the event loop of an async caller, and its future
    waiter: asyncio.Future | None = None


def _malloc_trim() -> Callable[[], Any]:
    """glibc's malloc_trim(0), or a no-op elsewhere. Batches of a few hundred rows allocate and free tens of MB
    of activations from three threads; glibc keeps freed memory in its arenas, and a 10-minute run at 200
    clients grew the server from 275 to 695 MB, of which malloc_trim gave back 240 MB: it was free, not leaked."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


TRIM_EVERY = 1.0  # seconds between malloc_trim calls on the model thread (each takes about a millisecond)


class Batcher:
    """One thread runs the model; all requests waiting when it is free go into its next call together.

    Each request gets only its own rows back (mixed with its own session's cache), and the predictor is
    never entered by two threads at once, so a backend that keeps internal state (a KV cache) needs no
    locking of its own.
    """

    def __init__(self, predictor: Predictor, max_rows: int = BATCH_ROWS):
        self.pred = predictor
        self.max_rows = max_rows
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._trim, self._trimmed = _malloc_trim(), time.monotonic()

    def submit(self, prefixes: list[str], k: int, session: AdaptiveSession | None = None
               ) -> concurrent.futures.Future:
        """A future of k (char, prob) dicts per prefix, best first."""
        job = Job(prefixes, k, session)
        if not prefixes:
            job.future.set_result([])
            return job.future
        return self._put(job)

    def call(self, work: Callable[[], Any]) -> concurrent.futures.Future:
        """A future of work() run on the model thread, between batches (it may call the predictor)."""
        return self._put(Job([], 0, None, work=work))

    def _put(self, job: Job) -> concurrent.futures.Future:
        with self._lock:
            if self._thread is None:  # started on first use, so an app built without a server costs nothing
                self._thread = threading.Thread(target=self._run, name="nextchar-model", daemon=True)
                self._thread.start()
        try:
            job.loop = asyncio.get_running_loop()
        except RuntimeError:
            job.loop = None
        if job.loop is not None:
            # An async caller gets an asyncio future (asyncio.wrap_future passes it through), resolved with the
            # rest of its batch in one call on the loop: one wake-up of the event loop per batch, where a
            # wrapped concurrent future costs one per request (12% of the server's CPU in a 32-client profile).
            job.waiter = job.loop.create_future()
            job.waiter.add_done_callback(lambda w: w.cancelled() and job.future.cancel())
        self._jobs.put(job)
        return job.waiter if job.waiter is not None else job.future  # type: ignore[return-value]

    @staticmethod
    def _deliver(jobs: list[Job]) -> None:
        """Hand the finished jobs' results to their async callers: one call_soon_threadsafe per event loop."""
        loops: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        for j in jobs:
            if j.loop is not None:
                loops.setdefault(j.loop, []).append(j)
        for loop, js in loops.items():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(Batcher._resolve, js)

    @staticmethod
    def _resolve(jobs: list[Job]) -> None:
        for j in jobs:
            w = j.waiter
            if w is None or w.done():
                continue
            if j.future.cancelled():
                w.cancel()
            elif j.future.exception() is not None:
                w.set_exception(j.future.exception())
            else:
                w.set_result(j.future.result())

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join(timeout=10)
                self._thread = None

    def _run(self) -> None:
        while True:
            if time.monotonic() - self._trimmed > TRIM_EVERY:
                self._trim()  # hand the last batches' freed memory back to the system
                self._trimmed = time.monotonic()
            job = self._jobs.get()
            if job is None:
                return
            if job.work is not None:
                self._work(job)
                self._deliver([job])
                continue
            jobs, rows, later = [job], len(job.prefixes), []
            while rows < self.max_rows:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                if nxt.work is not None:
                    later.append(nxt)
                    continue
                jobs.append(nxt)
                rows += len(nxt.prefixes)
            # a request whose client went away was cancelled: skip it; the rest can no longer be cancelled
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            prefixes = [p for j in jobs for p in j.prefixes]
            try:
                probs = np.concatenate([self.pred.dist(prefixes[i:i + FORWARD_ROWS])
                                        for i in range(0, len(prefixes), FORWARD_ROWS)])  # (N, V)
            except BaseException as e:  # noqa: BLE001 - handed to every waiting request, never lost
                for j in jobs:
                    j.future.set_exception(e)
                self._deliver(jobs + later)
                for j in later:
                    self._work(j)
                self._deliver(later)
                continue
            # Sessions mix their own cache into their rows; then one ranking for the whole batch at the largest
            # k (a row's best k are the first k of its best kmax: the order is by probability, then id).
            probs = probs.astype(np.float64)  # (N, V) session mixtures are float64: rank them as they are
            i, ok_jobs = 0, []
            for j in jobs:
                n = len(j.prefixes)
                try:
                    if j.session is not None:
                        probs[i:i + n] = j.session.dist_batch(j.prefixes, probs[i:i + n])
                    ok_jobs.append((j, i))
                except BaseException as e:  # noqa: BLE001
                    j.future.set_exception(e)
                i += n
            try:
                ok = self.pred.suggestible_after([self.pred.encode(p) for p in prefixes])  # (N, V) per row
                ranked = rank(probs, ok, self.pred.vocab.chars, max(j.k for j in jobs)) if ok_jobs else []
                for j, i in ok_jobs:
                    j.future.set_result([[{"char": c, "prob": round(p, 6)} for c, p in r[:j.k]]
                                         for r in ranked[i:i + len(j.prefixes)]])
            except BaseException as e:  # noqa: BLE001
                for j, _ in ok_jobs:
                    j.future.set_exception(e)
            self._deliver(jobs)
            for j in later:
                self._work(j)
            self._deliver(later)

    @staticmethod
    def _work(job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.work())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            job.future.set_exception(e)


# ------------------------------------------------------------------------------------------ errors


class Answer(JSONResponse):
    """The server's JSON (nextchar.files.dumps): UTF-8, with U+2028, U+2029 and U+0085 escaped, so a client that
    reads an answer line by line (or JavaScript before ES2019) never sees it broken."""

    def render(self, content: Any) -> bytes:
        return dumps(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


def unknown(pred: Predictor, prefixes: list[str]) -> tuple[list[float], list[bool]]:
    """unknown_share and mostly_unknown of each prefix (the fields every prediction answer carries)."""
    shares = [round(pred.unknown_share(p), 4) for p in prefixes]
    return shares, [s >= MOSTLY_UNKNOWN for s in shares]


class SafeJSON(JSONResponse):
    """JSON that always encodes: ASCII escapes survive lone surrogates from a client's JSON."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error(status: int, message: str, **extra: Any) -> SafeJSON:
    return SafeJSON({"error": message, **extra}, status_code=status)


def _field(loc: tuple | list) -> str:
    parts = [str(x) for x in loc if x != "body"]
    return ".".join(parts) or "body"


async def on_validation_error(request: Request, exc: RequestValidationError) -> SafeJSON:
    # pydantic's own detail echoes the input (which may be huge, NaN or unencodable); keep field + message
    errs = [{"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid")), "type": str(e.get("type"))}
            for e in exc.errors()]
    first = errs[0] if errs else {"field": "body", "message": "invalid request", "type": ""}
    if first["type"] == "json_invalid":
        msg = "request body is not valid JSON"
    elif first["type"] == "model_attributes_type":
        ctype = request.headers.get("content-type", "")
        hint = "" if "json" in ctype else " with Content-Type: application/json"
        msg = f"send a JSON object{hint}"
    else:
        msg = f"{first['field']}: {first['message']}"
    return error(422, msg, errors=errs)


async def on_http_error(request: Request, exc: StarletteHTTPException) -> SafeJSON:
    if exc.status_code == 400 and "parsing the body" in str(exc.detail):
        return error(422, "request body is not valid JSON (or nested too deeply)")
    return error(exc.status_code, str(exc.detail))


async def on_user_error(request: Request, exc: UserError) -> SafeJSON:
    return error(422, str(exc))


async def on_crash(request: Request, exc: Exception) -> SafeJSON:
    log.exception("request failed: %s %s", request.method, request.url.path)
    return error(500, "internal error (see the server log)")


class BodyLimit:
    """ASGI middleware: a request body over max_bytes gets 413 before the app sees it (chunked bodies too).

    The body is read here in full (it is small by then) and handed on as one message, so the app's own
    body parsing can never swallow the limit into a generic parse error.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = error(413, f"request body larger than {self.max_bytes} bytes")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and not length.isdigit():
            await error(400, "invalid Content-Length header")(scope, receive, send)
            return
        if length is not None and int(length) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would report it

        await self.app(scope, replay, send)


# ------------------------------------------------------------------------------------------ the app


def create_app(predictor: Predictor | str | Path, backend: str = "auto", max_sessions: int = MAX_SESSIONS,
               max_text: int = MAX_TEXT, weights: Weights = WEIGHTS, max_body: int = MAX_BODY,
               threads: int | None = None, sessions_db: str | Path | None = None) -> FastAPI:
    """The FastAPI app for a loaded Predictor, or a folder or model name (engine.load with backend, threads).

    sessions_db: an SQLite file holding the sessions' remembered text, shared by every server process that is
    given the same file (see sharedsessions); None keeps them in this process's memory."""
    check_int(max_body, "max_body")
    pred = (predictor if isinstance(predictor, Predictor)
            else engine.load(predictor, backend=backend, threads=threads))
    if sessions_db is not None:
        from nextchar.sharedsessions import SharedSessionStore

        sessions: Any = SharedSessionStore(pred, sessions_db, max_sessions=max_sessions, max_text=max_text,
                                           weights=weights)
    else:
        sessions = SessionStore(pred, max_sessions=max_sessions, max_text=max_text, weights=weights)
    batcher = Batcher(pred)
    completer = Completer(pred)  # used on the model thread only; its memo holds recent prefixes' windows

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc load Swagger UI and ReDoc from files in that package,
    # not from a CDN, so the docs work without internet
    app = FastAPIOffline(title="nextchar", version="1", lifespan=lifespan, default_response_class=Answer,
                         description="Ranks the next character of any text in the model's languages. The web "
                                     f"keyboard is at `/`. Bodies over {max_body} bytes get 413; malformed requests "
                                     "get 422; every error is JSON with an `error` message.")
    app.state.predictor, app.state.sessions, app.state.batcher = pred, sessions, batcher
    app.state.completer = completer
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(UserError, on_user_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_crash)
    app.add_middleware(BodyLimit, max_bytes=max_body)

    async def predictions(prefixes: list[str], k: int, session: str | None) -> list[list[dict]]:
        # the event loop only parses and waits; model, cache and ranking run on the model thread
        return await asyncio.wrap_future(batcher.submit(prefixes, k, sessions.get(session) if session else None))

    # Answers are built as JSONResponse directly: response_model still documents them in /docs, and
    # skipping its re-validation of our own output saves time on every keystroke.
    @app.post("/v1/predict", response_model=PredictResponse)
    async def predict(req: PredictRequest) -> JSONResponse:
        """The k most likely next characters after `prefix`, adapted to `session` when given."""
        rows = await predictions([req.prefix], req.k, req.session)
        shares, mostly = unknown(pred, [req.prefix])
        return Answer({"predictions": rows[0], "model": pred.run_id, "adapted": req.session is not None,
                       "unknown_share": shares[0], "mostly_unknown": mostly[0]})

    @app.post("/v1/predict/batch", response_model=BatchResponse)
    async def predict_batch(req: BatchRequest) -> JSONResponse:
        """One prediction list per prefix (one model call for all of them)."""
        rows = await predictions(req.prefixes, req.k, req.session)
        shares, mostly = unknown(pred, req.prefixes)
        return Answer({"predictions": rows, "model": pred.run_id, "adapted": req.session is not None,
                       "unknown_share": shares, "mostly_unknown": mostly})

    @app.post("/v1/complete", response_model=CompleteResponse)
    async def complete(req: CompleteRequest) -> JSONResponse:
        """The k most likely ways to finish the current word of `prefix` (see nextchar.complete for the word rule)."""
        session = sessions.get(req.session) if req.session else None
        rows = await asyncio.wrap_future(batcher.call(lambda: completer.complete(req.prefix, req.k, session)))
        shares, mostly = unknown(pred, [req.prefix])
        return Answer({"completions": [{"text": t, "prob": round(p, 6)} for t, p in rows],
                       "model": pred.run_id, "adapted": session is not None, "unknown_share": shares[0],
                       "mostly_unknown": mostly[0]})

    @app.post("/v1/session/observe", response_model=SessionResponse)
    async def observe(req: ObserveRequest) -> dict:
        """Remember text the user wrote, for this session's later predictions (bounded; oldest dropped)."""
        s = sessions.get(req.session)
        s.observe(req.text)
        return {"session": req.session, "history_chars": s.history_chars}

    @app.post("/v1/session/forget", response_model=SessionResponse)
    async def forget(req: ForgetRequest) -> dict:
        """Drop everything the server keeps for this session."""
        sessions.forget(req.session)
        # the completion memo is shared and keyed by recent text: emptied too, on the model thread that uses it
        await asyncio.wrap_future(batcher.call(completer.clear))
        return {"session": req.session, "history_chars": 0}

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict:
        return {"status": "ok", "model": pred.run_id, "sessions": len(sessions), "cpu_s": time.process_time()}

    languages = getattr(pred, "languages", None) or ([] if isinstance(predictor, Predictor)
                                                    else keyboard.run_languages(predictor))
    layout: list[dict] = []
    layout_lock = asyncio.Lock()

    @app.get("/v1/keys", response_model=KeysResponse)
    async def keys() -> JSONResponse:
        """The web keyboard's keys (the model's characters by script, most frequent first) and the limits a
        client must respect. Computed on the first request."""
        async with layout_lock:
            if not layout:
                # on the model thread, like every use of the predictor (once: about a second for the default model)
                found = await asyncio.wrap_future(batcher.call(lambda: keyboard.layout(pred)))
                layout.extend(keyboard.as_json(found))
        return Answer({"model": pred.run_id, "languages": languages, "max_text": sessions.max_text,
                             "max_body": max_body, "scripts": layout})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a UserError naming the address (port taken, unknown host)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: must be 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it every
    # keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"{host}:{port}: cannot listen ({e.strerror})") from None
    sock.listen(2048)
    return sock


def default_limits() -> Limits:
    """The connection guard's bounds for this process: max_connections below the open-file limit (raised to its
    hard ceiling first), so accepting never fails for want of a file descriptor."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    room = 4096 if soft == resource.RLIM_INFINITY else max(64, soft - 128)  # model files, logs, the listener
    return Limits(max_connections=min(4096, room))


def server_config(app: FastAPI, limits: Limits | None = None, **options: Any) -> Any:
    """uvicorn's Config for a nextchar app: uvicorn's own HTTP protocol with the connection guard (connguard:
    deadlines for silent and slow clients, connections per address and in all), and no limit_concurrency, whose
    503 counted idle connections. The guard is app.state.guard (its counters say what it closed)."""
    import uvicorn
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    guard = Guard(limits or default_limits())
    app.state.guard = guard
    base = import_from_string(HTTP_PROTOCOLS["auto"])  # httptools when installed, else h11
    settings = dict(log_level="warning", access_log=False, timeout_keep_alive=30, limit_concurrency=None,
                    backlog=2048)
    return uvicorn.Config(app, http=guarded_protocol(base, guard), **{**settings, **options})


def serve(run_path: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "auto",
          threads: int | None = None, limits: Limits | None = None, workers: int = 1,
          sessions_db: str | Path | None = None) -> None:
    """`nextchar serve`: load the run, listen, and serve until Ctrl-C.

    workers > 1 forks that many server processes on one listening socket (the kernel spreads connections
    among them), each with its own model and connection guard, sharing the sessions through an SQLite file
    (sessions_db, or a private temporary one); a worker that dies is started again."""
    import uvicorn

    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    sock = bind(host, port)  # before loading, so a taken port fails fast
    shown = sock.getsockname()
    url_host = f"[{shown[0]}]" if ":" in shown[0] else shown[0]
    if workers > 1:
        _serve_workers(sock, f"http://{url_host}:{shown[1]}/", run_path, backend, threads, limits, workers,
                       sessions_db)
        return
    try:
        app = create_app(run_path, backend=backend, threads=threads, sessions_db=sessions_db)
    except BaseException:
        sock.close()
        raise
    # the exact line tests and benchmarks wait for (port 0 picks a free one, and this says which)
    print(f"nextchar: serving {app.state.predictor.run_id} at http://{url_host}:{shown[1]}/ (API docs at /docs)",
          flush=True)
    uvicorn.Server(server_config(app, limits)).run(sockets=[sock])


def _serve_workers(sock: socket.socket, url: str, run_path: str | Path, backend: str, threads: int | None,
                   limits: Limits | None, workers: int, sessions_db: str | Path | None) -> None:
    """Fork `workers` uvicorn servers on sock; restart any that dies; stop them all on Ctrl-C or SIGTERM.

    The parent never loads the model (a torch process's threads must not cross a fork): each worker does, and
    tells the parent through a pipe that it is ready, or why it cannot start (that error is raised here)."""
    import os
    import shutil
    import signal
    import tempfile

    import uvicorn

    own_db = sessions_db is None
    if own_db:
        sessions_db = Path(tempfile.mkdtemp(prefix="nextchar-sessions-")) / "sessions.db"
    children: dict[int, float] = {}
    stopping = False

    def start() -> int:
        """Fork one worker; returns the read end of its ready pipe."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
                try:
                    app = create_app(run_path, backend=backend, threads=threads, sessions_db=sessions_db)
                except UserError as e:
                    os.write(w, f"error {e}".encode("utf-8", "replace"))
                    raise
                os.write(w, f"ok {app.state.predictor.run_id}".encode("utf-8", "replace"))
                os.close(w)
                uvicorn.Server(server_config(app, limits)).run(sockets=[sock])
                code = 0
            except BaseException:  # noqa: BLE001 - reported, then this worker exits (and is replaced)
                log.exception("worker %d failed", os.getpid())
            os._exit(code)
        os.close(w)
        children[pid] = time.monotonic()
        return r

    def ready(r: int) -> str:
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode("utf-8", "replace")
        if not msg.startswith("ok "):
            raise UserError(msg.removeprefix("error ") or "a server worker could not start (see the log above)")
        return msg[3:]

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_id = ready(start())  # the first one alone: a bad run fails here, once
        for r in [start() for _ in range(workers - 1)]:
            ready(r)
        print(f"nextchar: serving {run_id} at {url} (API docs at /docs) with {workers} workers", flush=True)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            born = children.pop(pid, None)
            if born is None or stopping:
                continue
            log.warning("worker %d exited (status %d); starting another", pid, status)
            if time.monotonic() - born < 5:
                time.sleep(1)  # a worker that dies at once would otherwise be restarted in a tight loop
            with contextlib.suppress(UserError):
                ready(start())
    finally:
        stop(0, None)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for s, h in old.items():
            signal.signal(s, h)
        sock.close()
        if own_db:
            shutil.rmtree(Path(sessions_db).parent, ignore_errors=True)


@contextlib.contextmanager
def server_process(run: str | Path, host: str = "127.0.0.1", port: int = 0, backend: str = "auto",
                   threads: int = 1, timeout: float = 120.0, workers: int = 1,
                   sessions_db: str | Path | None = None) -> Iterator[str]:
    """Run `nextchar serve` in a subprocess (port 0: a free one); yield its base URL; stop it on exit."""
    cmd = [sys.executable, "-m", "nextchar", "serve", "--run", str(run), "--host", host, "--port", str(port),
           "--backend", backend, "--threads", str(threads), "--workers", str(workers)]
    if sessions_db is not None:
        cmd += ["--sessions-db", str(sessions_db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            errors="replace")
    lines: list[str] = []
    found = threading.Event()

    def pump() -> None:  # keep reading, so a chatty server never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("nextchar: serving"):
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"server did not start ({' '.join(cmd)}):\n{''.join(lines[-20:])}")
        m = re.search(r"(http://\S+/)", next(x for x in lines if x.startswith("nextchar: serving")))
        assert m is not None
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
