"""Connection guard for uvicorn: read deadlines for slow or silent clients, and bounded connections per address.

uvicorn closes a keep-alive connection that stays idle after a response (timeout_keep_alive), but nothing else
waits on a client with a deadline: a socket that connects and never sends a byte, or sends its request one byte a
second, is kept forever, and uvicorn's limit_concurrency counts such connections, so 2,100 of them made every
request get 503 (issue 14, fault 5). This module subclasses uvicorn's HTTP protocol (httptools or h11, whichever
uvicorn picks) and adds what uvicorn lacks:

- a deadline for each wait on the client: the head of the first request must arrive within header_timeout of
  the connection opening, a later head within header_timeout of its first byte being seen (an idle keep-alive
  connection is left to uvicorn's timeout_keep_alive), a body within body_timeout of its head (408, then
  closed; a socket that never sent a byte is just closed); the time the app takes to answer is never limited;
- at most per_address open connections per client address, and max_connections in all: a new connection over a
  bound first closes the oldest connection of that address (or of all) that is only waiting for a request, and
  is refused (429 per address, 503 overall) only when every one of them is in the middle of a request.

So silent sockets cost nothing for long, one address cannot hold the server, and a new honest client always gets
a connection while some other one is idle. Behind a reverse proxy every client has the proxy's address: raise
per_address there (or set 0 for no per-address bound) and let the proxy bound its clients.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Limits:
    """Bounds of one server (seconds and connection counts; 0 = no per-address bound)."""

    header_timeout: float = 10.0
    body_timeout: float = 20.0
    per_address: int = 256
    max_connections: int = 4096


@dataclass
class _Conn:
    addr: str
    since: float  # when the current wait on the client began
    state: tuple = ()  # what the connection waits for (_waiting_for); a new value restarts `since`
    bytes_in: int = 0  # bytes received during this wait (a silent socket is closed without a reply)


@dataclass
class Guard:
    """The shared state of one server's guarded connections (event loop thread only)."""

    limits: Limits
    conns: dict[Any, _Conn] = field(default_factory=dict)  # protocol -> its record, oldest first
    per_addr: Counter = field(default_factory=Counter)
    sweeping: asyncio.TimerHandle | None = None
    closed_timeout: int = 0  # counters, for tests and logs
    closed_evicted: int = 0
    refused: int = 0

    def tick(self) -> float:
        return max(0.05, min(1.0, self.limits.header_timeout / 4, self.limits.body_timeout / 4))


def _waiting_for(proto: Any) -> tuple:
    """What a connection waits for from its client: ("first",) the head of its first request, ("next", cycle)
    the head of the request after `cycle`'s response, ("body", cycle) the rest of a request's body, or () nothing
    (the app is answering). Cycles are compared by identity (the tuple holds them, so no id is reused)."""
    cycle = getattr(proto, "cycle", None)
    if cycle is None:
        return ("first",)
    if cycle.response_complete:
        return ("next", cycle)
    if cycle.more_body and not getattr(cycle, "disconnected", False):
        return ("body", cycle)
    return ()


def _reply(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    body = ('{"error":"' + message + '"}').encode("ascii")
    transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n%s" % (status, reason.encode("ascii"), len(body), body))
    transport.close()


def guarded_protocol(base: type, guard: Guard) -> type:
    """A subclass of uvicorn's HTTP protocol class `base` that applies `guard` (see the module docstring)."""

    class Guarded(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            addr = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
            lim = guard.limits
            if lim.per_address and guard.per_addr[addr] >= lim.per_address and not _evict(guard, addr):
                guard.refused += 1
                _reply(transport, 429, "Too Many Requests", f"more than {lim.per_address} connections from "
                       "your address are busy; retry later")
                return
            if lim.max_connections and len(guard.conns) >= lim.max_connections and not _evict(guard, None):
                guard.refused += 1
                _reply(transport, 503, "Service Unavailable", "server busy; retry later")
                return
            guard.conns[self] = _Conn(addr, time.monotonic(), _waiting_for(self))
            guard.per_addr[addr] += 1
            if guard.sweeping is None:
                guard.sweeping = self.loop.call_later(guard.tick(), _sweep, guard, self.loop)

        def data_received(self, data: bytes) -> None:
            rec = guard.conns.get(self)
            if rec is not None:
                state = _state(self, rec, time.monotonic())  # (as it was before these bytes are parsed)
                if state[:1] == ("next",) and not rec.bytes_in:
                    rec.since = time.monotonic()  # a later request's head: its deadline runs from its first byte
                rec.bytes_in += len(data)
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            rec = guard.conns.pop(self, None)
            if rec is not None:
                guard.per_addr[rec.addr] -= 1
                if guard.per_addr[rec.addr] <= 0:
                    del guard.per_addr[rec.addr]
            super().connection_lost(exc)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _evict(guard: Guard, addr: str | None) -> bool:
    """Close the oldest connection (of addr, or of any address) that only waits for a request head; False if
    every one is busy with a request."""
    now = time.monotonic()
    for proto, rec in guard.conns.items():
        if (addr is None or rec.addr == addr) and _state(proto, rec, now)[:1] in (("first",), ("next",)):
            guard.closed_evicted += 1
            _drop(guard, proto, rec)
            return True
    return False


def _state(proto: Any, rec: _Conn, now: float) -> tuple:
    state = _waiting_for(proto)
    if state != rec.state:
        rec.state, rec.since, rec.bytes_in = state, now, 0
    return state


def _drop(guard: Guard, proto: Any, rec: _Conn) -> None:
    """Forget a connection now (its count frees at once) and close it."""
    guard.conns.pop(proto, None)
    guard.per_addr[rec.addr] -= 1
    if guard.per_addr[rec.addr] <= 0:
        del guard.per_addr[rec.addr]
    proto.transport.close()


def _sweep(guard: Guard, loop: asyncio.AbstractEventLoop) -> None:
    """Close every connection whose current wait on its client is over its deadline; re-arm while any are open."""
    now = time.monotonic()
    lim = guard.limits
    for proto, rec in list(guard.conns.items()):
        state = _state(proto, rec, now)
        if not state or proto.transport.is_closing():
            continue
        if state[0] == "next" and not rec.bytes_in:
            continue  # idle between requests: uvicorn's timeout_keep_alive closes it (and _evict may)
        limit = lim.body_timeout if state[0] == "body" else lim.header_timeout
        if now - rec.since <= limit:
            continue
        guard.closed_timeout += 1
        guard.conns.pop(proto, None)
        guard.per_addr[rec.addr] -= 1
        if guard.per_addr[rec.addr] <= 0:
            del guard.per_addr[rec.addr]
        if rec.bytes_in or state[0] == "body":  # a started request gets an answer; a silent socket just closes
            what = "request body" if state[0] == "body" else "request head"
            _reply(proto.transport, 408, "Request Timeout", f"{what} not received within {limit:g} s")
        else:
            proto.transport.close()
    guard.sweeping = loop.call_later(guard.tick(), _sweep, guard, loop) if guard.conns else None
