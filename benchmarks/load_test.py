"""Load test: N concurrent clients type against a local nextchar server; req/s, p50/p99, errors, 5xx, server RSS.

    nice -n 5 python benchmarks/load_test.py                          # shipped model, 1, 32, 200 clients x 60 s
    python benchmarks/load_test.py --clients 200 --seconds 600 --soak   # RSS every minute over 10 minutes
    python benchmarks/load_test.py --run runs/quickstart --workers 2    # several server processes
    python benchmarks/load_test.py --url http://127.0.0.1:8000/ --pid 1234   # a server already running

Each client is one user typing a paragraph of its own (from the test split of the run's data dir, every language
in turn; a fixed list of sentences when there is none), one keystroke per request, waiting for the answer before
the next keystroke (POST /v1/predict, k = 3, half the clients with a session id). Every client types different
text, so the server's batching cannot share work between them the way identical scripts would let it. Clients
speak plain HTTP/1.1 over keep-alive sockets (a few lines of asyncio): an HTTP library would spend more CPU than
the server on the same 2 cores. The server is started here (`nextchar serve`, port 0) unless --url is given;
its resident memory and CPU are read from /proc for its whole process tree (workers included). The machine's
load average is printed first: numbers from a busy machine are not capacity figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from nextchar.errors import UserError
from nextchar.serve import server_process

MAX_SECONDS = 900  # a load test that forgets to stop would starve everyone else on the machine
LOCAL = {"127.0.0.1", "localhost", "::1"}
DEFAULT_RUN = Path(__file__).resolve().parents[1] / "src" / "nextchar" / "models" / "default"
# Without a data dir: what the simulated users type (several scripts; each client starts elsewhere in them).
TEXTS = [
    "The quick brown fox jumps over the lazy dog. Every morning the old librarian opened the windows.",
    "Le vieux château dominait la vallée depuis plus de huit siècles. Où est la boulangerie ?",
    "Москва — столица России и один из крупнейших городов Европы. Летом в парках гуляют семьи.",
    "ירושלים היא עיר עתיקה עם היסטוריה ארוכה ומרתקת. בכל שנה מגיעים אליה מבקרים רבים.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις του κόσμου.",
    "Dzień dobry! Zbigniew Wróblewski przyjedzie jutro do Krakowa o dziewiątej rano.",
]


# ------------------------------------------------------------------------------------------ what users type


def paragraphs(data: Path | None, n: int, seed: int = 0) -> tuple[list[str], str]:
    """n paragraphs (20+ characters) from a data dir's test split, languages in turn; (texts, where from)."""
    if data is not None and (data / "stats.json").is_file():
        from nextchar.data import open_data

        ds = open_data(data)
        rng = random.Random(seed)
        per_lang = []
        for lang in ds.languages:
            paras = [p for p in ds.text(lang, "test").split("\n") if len(p) >= 20]
            rng.shuffle(paras)
            per_lang.append(paras)
        out = [p for group in itertools.zip_longest(*per_lang) for p in group if p is not None][:n]
        if len(out) >= min(n, 24):
            return out, f"{len(out)} test paragraphs of {data}"
    return TEXTS, "the built-in sentences (no data dir: clients share texts)"


# ------------------------------------------------------------------------------------------ the server


def tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
    return out


def usage(pid: int | None) -> tuple[float, float]:
    """(resident MB, CPU seconds) of a process tree; (nan, nan) without a pid."""
    if pid is None:
        return float("nan"), float("nan")
    rss = cpu = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return rss, cpu


def server_pid(url: str) -> int | None:
    """The pid listening on url's port (from /proc/net/tcp and the sockets in /proc/*/fd), or None."""
    port = urlsplit(url).port
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # LISTEN
                    inodes.add(f[9])
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                    found.append(int(pid))
                    break
    return min(found) if found else None  # the parent of forked workers has the lowest pid


# ------------------------------------------------------------------------------------------ the clients


class Conn:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads (status, body)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, obj: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(obj, ensure_ascii=False).encode()
        self.writer.write(b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d"
                          b"\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close = 0, False
        for line in head.lower().split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"connection:") and b"close" in line:
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def client(host: str, port: int, i: int, texts: list[str], deadline: float, session: str | None,
                 lat: list[float], errors: list[str], statuses: dict[int, int]) -> None:
    """One user: types its paragraphs one character at a time, asking for suggestions after each keystroke."""
    conn = Conn(host, port)
    rng = random.Random(i)
    t = i % len(texts)
    pos = rng.randrange(len(texts[t]))
    try:
        while time.perf_counter() < deadline:
            pos += 1
            if pos > len(texts[t]):
                t, pos = (t + 1) % len(texts), 0  # the next paragraph, from its start
            body: dict = {"prefix": texts[t][:pos], "k": 3}
            if session:
                body["session"] = session
            t0 = time.perf_counter()
            try:
                status, data = await conn.post("/v1/predict", body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                await conn.close()
                await asyncio.sleep(0.05)
                continue
            statuses[status] = statuses.get(status, 0) + 1
            try:
                ok = status == 200 and len(json.loads(data)["predictions"]) == 3
            except (ValueError, KeyError):
                ok = False
            if not ok:
                errors.append(f"{status} {data[:120]!r}")
                continue
            lat.append(time.perf_counter() - t0)
    finally:
        await conn.close()


async def stage(url: str, pid: int | None, clients: int, seconds: float, texts: list[str],
                session_fraction: float, every: float = 0.0) -> dict:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    rss0, cpu0 = usage(pid)
    lat: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    t0 = time.perf_counter()
    deadline = t0 + seconds
    n_sess = round(clients * session_fraction)
    tasks = [asyncio.create_task(client(host, port, i, texts, deadline, f"load-{i}" if i < n_sess else None,
                                        lat, errors, statuses)) for i in range(clients)]
    samples = []
    while every and time.perf_counter() < deadline:  # --soak: resident memory as the minutes go by
        await asyncio.sleep(min(every, max(0.0, deadline - time.perf_counter())))
        samples.append((time.perf_counter() - t0, usage(pid)[0], len(lat)))
        print(f"  {samples[-1][0]:6.0f} s  server RSS {samples[-1][1]:7.1f} MB  {samples[-1][2]:,} requests",
              flush=True)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    rss1, cpu1 = usage(pid)
    ms = np.array(lat) * 1000 if lat else np.full(1, np.nan)
    return {"clients": clients, "requests": len(lat), "seconds": wall, "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "errors": len(errors), "first_errors": errors[:3],
            "5xx": sum(n for s, n in statuses.items() if s >= 500), "rss_before": rss0, "rss_after": rss1,
            "cpu_ms_per_req": 1000 * (cpu1 - cpu0) / max(len(lat), 1), "samples": samples}


def table(rows: list[dict]) -> str:
    lines = ["| clients | requests | req/s | p50 ms | p99 ms | errors | 5xx | server CPU ms/req | server RSS MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']:,} | {r['rps']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} | {r['5xx']} | {r['cpu_ms_per_req']:.2f} | "
                     f"{r['rss_before']:.0f} → {r['rss_after']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--run", type=Path, help="Start `nextchar serve` for this run (default: the shipped model).")
    src.add_argument("--url", help="A server already running on this machine, e.g. http://127.0.0.1:8000/")
    ap.add_argument("--pid", type=int, help="With --url: the server's pid (found from the port if omitted).")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 32, 200], help="Concurrent clients, one stage each.")
    ap.add_argument("--seconds", type=float, default=60.0, help=f"Duration of each stage (at most {MAX_SECONDS}).")
    ap.add_argument("--soak", action="store_true", help="Print the server's RSS every minute during each stage.")
    ap.add_argument("--sessions", type=float, default=0.5, help="Fraction of clients that send a session id.")
    ap.add_argument("--data", type=Path, help="Data dir whose test paragraphs clients type (default: the run's).")
    ap.add_argument("--workers", type=int, default=1, help="With --run: server processes (nextchar serve --workers).")
    ap.add_argument("--backend", default="auto", help="With --run: auto, torch, onnx or onnx-int8.")
    ap.add_argument("--threads", type=int, default=1, help="With --run: torch threads per server process.")
    args = ap.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS or min(args.clients) < 1 or not 0 <= args.sessions <= 1:
        sys.exit(f"error: need 0 < --seconds <= {MAX_SECONDS}, --clients >= 1, 0 <= --sessions <= 1")
    if args.url and urlsplit(args.url).hostname not in LOCAL:
        sys.exit(f"error: --url {args.url}: only a server on this machine (127.0.0.1) may be load-tested")
    run = args.run or (None if args.url else DEFAULT_RUN)
    data = args.data
    if data is None and run is not None and (run / "config.json").is_file():
        d = Path(json.loads((run / "config.json").read_text(encoding="utf-8")).get("data") or "")
        data = d if d.is_absolute() else Path(__file__).resolve().parents[1] / d
    texts, origin = paragraphs(data, max(args.clients))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores before the test; "
          f"clients type {origin}")
    rows = []
    try:
        with (server_process(run, backend=args.backend, threads=args.threads, workers=args.workers) if run
              else contextlib.nullcontext(args.url.rstrip("/") + "/")) as url:
            pid = args.pid or server_pid(url)
            print(f"server {url} (pid {pid}, {args.workers} worker(s)), {args.sessions:.0%} of clients with a "
                  f"session, {args.seconds:g} s per stage", flush=True)
            for n in args.clients:
                r = asyncio.run(stage(url, pid, n, args.seconds, texts, args.sessions, 60.0 if args.soak else 0.0))
                rows.append(r)
                print(f"{n} clients: {r['rps']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"errors {r['errors']}, 5xx {r['5xx']}, server CPU {r['cpu_ms_per_req']:.2f} ms/req, RSS "
                      f"{r['rss_before']:.0f} -> {r['rss_after']:.0f} MB", flush=True)
                for e in r["first_errors"]:
                    print(f"  error: {e}")
    except UserError as e:
        sys.exit(f"error: {e}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after")
    print(table(rows))
    sys.exit(1 if any(r["errors"] for r in rows) else 0)


if __name__ == "__main__":
    main()
