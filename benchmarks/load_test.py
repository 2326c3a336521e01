"""Load test: N concurrent clients type against a local nextchar server for a fixed time; prints req/s, p50/p99, errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from nextchar.errors import UserError
from nextchar.serve import server_process

MAX_SECONDS = 600  # a load test that forgets to stop would starve everyone else on the machine
LOCAL = {"127.0.0.1", "localhost", "::1"}
# What the simulated users type, character by character (several scripts, so every client differs).
TEXTS = [
    "The quick brown fox jumps over the lazy dog. Every morning the old librarian opened the windows.",
    "Le vieux château dominait la vallée depuis plus de huit siècles. Où est la boulangerie ?",
    "Москва — столица России и один из крупнейших городов Европы. Летом в парках гуляют семьи.",
    "ירושלים היא עיר עתיקה עם היסטוריה ארוכה ומרתקת. בכל שנה מגיעים אליה מבקרים רבים.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις του κόσμου.",
    "Dzień dobry! Zbigniew Wróblewski przyjedzie jutro do Krakowa o dziewiątej rano.",
]


async def client(c: httpx.AsyncClient, i: int, deadline: float, session: str | None, k: int,
                 lat: list[float], errors: list[str]) -> None:
    """One user: types a text one character at a time, asking for suggestions after each keystroke."""
    text = TEXTS[i % len(TEXTS)]
    pos = random.Random(i).randrange(len(text))
    while time.perf_counter() < deadline:
        pos = pos % len(text) + 1
        body: dict = {"prefix": text[:pos], "k": k}
        if session:
            body["session"] = session
        t = time.perf_counter()
        try:
            r = await c.post("v1/predict", json=body)
            ok = r.status_code == 200 and len(r.json()["predictions"]) == k
            if not ok:
                errors.append(f"{r.status_code} {r.text[:120]}")
        except (httpx.HTTPError, ValueError, KeyError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        lat.append(time.perf_counter() - t)


async def run(url: str, clients: int, seconds: float, session_fraction: float, k: int) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        before = (await c.get("healthz")).json()
        n_sess = round(clients * session_fraction)
        lat: list[float] = []
        errors: list[str] = []
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*[client(c, i, deadline, f"load-{i}" if i < n_sess else None, k, lat, errors)
                               for i in range(clients)])
        wall = time.perf_counter() - t0
        cpu = (await c.get("healthz")).json()["cpu_s"] - before["cpu_s"]
    ms = np.array(lat) * 1000 if lat else np.zeros(1)
    return {"model": before["model"], "server_cpu_ms": 1000 * cpu / max(len(lat), 1), "requests": len(lat), "errors": len(errors), "first_errors": errors[:3],
            "rps": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="Start `nextchar serve` for this run on a free local port.")
    src.add_argument("--url", help="A server already running on this machine, e.g. http://127.0.0.1:8000/")
    ap.add_argument("--clients", type=int, default=32, help="Concurrent clients.")
    ap.add_argument("--seconds", type=float, default=10.0, help=f"Duration (at most {MAX_SECONDS}).")
    ap.add_argument("--sessions", type=float, default=0.5, help="Fraction of clients that send a session id.")
    ap.add_argument("-k", type=int, default=3, help="Suggestions per request.")
    ap.add_argument("--backend", default="torch", help="With --run: torch or onnx.")
    ap.add_argument("--threads", type=int, default=1, help="With --run: torch threads of the server.")
    args = ap.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS or args.clients < 1 or not 0 <= args.sessions <= 1:
        sys.exit(f"error: need 0 < --seconds <= {MAX_SECONDS}, --clients >= 1, 0 <= --sessions <= 1")
    if args.url and urlsplit(args.url).hostname not in LOCAL:
        sys.exit(f"error: --url {args.url}: only a server on this machine (127.0.0.1) may be load-tested")
    try:
        with (server_process(args.run, backend=args.backend, threads=args.threads) if args.run
              else contextlib.nullcontext(args.url.rstrip("/") + "/")) as url:
            res = asyncio.run(run(url, args.clients, args.seconds, args.sessions, args.k))
    except UserError as e:
        sys.exit(f"error: {e}")
    except httpx.HTTPError as e:
        sys.exit(f"error: cannot reach the server ({e})")
    print(f"model {res['model']} at {url}: {args.clients} clients ({args.sessions:.0%} with a session), "
          f"{res['seconds']:.1f} s")
    print(f"requests {res['requests']}  {res['rps']:.1f} req/s  p50 {res['p50_ms']:.1f} ms  "
          f"p99 {res['p99_ms']:.1f} ms  max {res['max_ms']:.1f} ms  errors {res['errors']}")
    # the clients share this machine's cores with the server: its CPU per request is the steadier number
    print(f"server CPU {res['server_cpu_ms']:.2f} ms per request")
    for e in res["first_errors"]:
        print(f"  error: {e}")
    sys.exit(1 if res["errors"] else 0)


if __name__ == "__main__":
    main()
