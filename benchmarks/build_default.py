"""Build the shipped default model and measure it: package, fit, evaluate (static and streaming), cost, model card.

    python benchmarks/build_default.py --transformer RUN --counts COUNTS --data data/dasher --out DIR \\
        --transformer-command "nextchar train ..." --counts-command "nextchar train --model counts ..."

DIR is what src/nextchar/models/default/ holds (nextchar.package.package_combined: the Transformer's ONNX form in
float16, the count model, the combination rule fitted on dev, eval_test.json, eval_stream_test.json,
MODEL_CARD.md). Then, on this machine, the cost figures the card reports (issue 12's budget in brackets):
- size on disk (<= 50 MB);
- load: a new process that imports nextchar, loads the folder and answers one topk (<= 1.5 s), median of 5;
- keystroke: `Session.topk` per keystroke while typing dev text of 6 languages (a backspace every 23rd key), the
  typing window of stride context/2, one thread: wall p50 / p99 and CPU p50 (p50 <= 2 ms, p99 <= 5 ms);
- file mode: `topk_batch` on 2 threads, prefixes/s on a typing trace (exact windows; typing windows) and on
  unrelated prefixes (>= 5,000/s);
- serving: `nextchar serve` in a subprocess, 8 sessions typing 400 keystrokes each after observing 20,000
  characters each; the server's peak and final RSS (<= 500 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_latency import keystrokes, rate, trace, typing_prefixes  # noqa: E402

from nextchar import engine  # noqa: E402
from nextchar.data import open_data  # noqa: E402
from nextchar.export import dev_prefixes  # noqa: E402
from nextchar.files import folder_bytes  # noqa: E402
from nextchar.package import package_combined, write_combined_card  # noqa: E402


def cold_load(folder: Path, runs: int = 5) -> dict:
    code = ("import time; t = time.perf_counter(); from nextchar import engine; "
            f"p = engine.load({str(folder)!r}, threads=1); p.topk('Hello wor', 3); print(time.perf_counter() - t)")
    walls = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        walls.append(float(out.stdout.strip().splitlines()[-1]))
    return {"median_s": statistics.median(walls), "min_s": min(walls)}


def rss_of(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    get = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mb": get.get("VmRSS", float("nan")), "peak_mb": get.get("VmHWM", float("nan"))}


def post(url: str, body: dict) -> dict:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")  # as a browser sends it (JSON.stringify)
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def serving(folder: Path, ds, sessions: int = 8, keys: int = 400, observe: int = 20000) -> dict:
    """RSS of a `nextchar serve` process after sessions that observed text and typed, and its request times."""
    cmd = [sys.executable, "-m", "nextchar", "serve", "--run", str(folder), "--port", "0", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("server did not start")
        url = line.split(" at ")[1].split()[0]
        idle = rss_of(proc.pid)
        langs = sorted(ds.languages)
        times = []
        for i in range(sessions):
            lang = langs[(3 * i) % len(langs)]
            text = ds.text(lang, "train")
            for lo in range(0, observe, 5000):  # messages of 5,000 characters (a body is at most 64 KB)
                post(url + "v1/session/observe", {"session": f"s{i}", "text": text[lo:min(observe, lo + 5000)]})
            typed = ds.text(lang, "dev")[:keys]
            for j in range(1, len(typed) + 1):
                t = time.perf_counter()
                post(url + "v1/predict", {"prefix": typed[:j], "k": 3, "session": f"s{i}"})
                times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        return {"idle": idle, "after": rss_of(proc.pid), "requests": len(times),
                "request_ms_p50": float(np.percentile(ms, 50)), "request_ms_p99": float(np.percentile(ms, 99))}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def measure(folder: Path, data: str) -> dict:
    ds = open_data(data)
    res = {"load_avg_start": os.getloadavg()[0], "size_mb": folder_bytes(folder) / 1e6, "load": cold_load(folder)}
    pred = engine.load(folder, threads=1)
    typed = typing_prefixes(ds, 250)
    res["keystroke"] = keystrokes(pred, typed, True, 60.0)
    file_trace, file_random = trace(ds, 6000), dev_prefixes(ds, 3000)
    two = engine.load(folder, threads=2)
    res["file_trace_per_s"] = rate(two, file_trace, 60.0)
    res["file_trace_typing_window_per_s"] = rate(two, file_trace, 60.0, stride=max(1, two.context // 2))
    res["file_random_per_s"] = rate(two, file_random, 60.0)
    res["serving"] = serving(folder, ds)
    res["load_avg_end"] = os.getloadavg()[0]
    return res


def cost_rows(c: dict) -> dict:
    k, s = c["keystroke"], c["serving"]
    return {
        "size on disk": f"{c['size_mb']:.1f} MB",
        "load (new process: imports, engine.load, one topk), median of 5": f"{c['load']['median_s']:.2f} s",
        "keystroke (Session.topk, 1 thread), wall p50 / p99": f"{k['p50']:.2f} ms / {k['p99']:.2f} ms",
        "keystroke, CPU time p50": f"{k['cpu50']:.2f} ms",
        "file mode (2 threads), typing trace, exact windows": f"{c['file_trace_per_s']:,.0f} prefixes/s",
        "file mode (2 threads), typing trace, typing windows": f"{c['file_trace_typing_window_per_s']:,.0f} prefixes/s",
        "file mode (2 threads), unrelated prefixes": f"{c['file_random_per_s']:,.0f} prefixes/s",
        "serving RSS: idle / after 8 sessions (20,000 characters observed each, 400 keystrokes)":
            f"{s['idle']['rss_mb']:.0f} MB / {s['after']['rss_mb']:.0f} MB (peak {s['after']['peak_mb']:.0f} MB)",
        "serving, one /v1/predict with a session, p50 / p99": f"{s['request_ms_p50']:.1f} ms / {s['request_ms_p99']:.1f} ms",
        "machine": f"{os.cpu_count()} cores shared with other jobs, load average {c['load_avg_start']:.1f} -> "
                   f"{c['load_avg_end']:.1f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transformer", required=True, help="Transformer run (with eval_test.json)")
    ap.add_argument("--counts", required=True, help="count model folder")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--transformer-command", default="")
    ap.add_argument("--counts-command", default="")
    ap.add_argument("--positions", type=int, default=2000, help="dev positions per language for the rule")
    ap.add_argument("--cost-only", action="store_true", help="measure an existing --out and rewrite its card")
    ap.add_argument("--card-only", action="store_true",
                    help="rewrite the card of an existing --out from its eval_*.json and the saved cost figures")
    args = ap.parse_args()
    cost_path = args.out.parent / f"{args.out.name}-cost.json"
    if args.card_only:
        write_combined_card(args.out, None, cost_rows(json.loads(cost_path.read_text())))
        print(f"wrote {args.out / 'MODEL_CARD.md'}")
        return
    commands = {"transformer": args.transformer_command, "counts": args.counts_command,
                "package": "python benchmarks/build_default.py " + " ".join(sys.argv[1:])}
    t0 = time.time()
    if not args.cost_only:
        package_combined(args.transformer, args.counts, args.out, args.data, commands, positions=args.positions)
        print(f"packaged and evaluated in {time.time() - t0:.0f} s", flush=True)
    cost = measure(args.out, args.data)
    cost_path.write_text(json.dumps(cost, indent=1))
    rows = cost_rows(cost)
    write_combined_card(args.out, None, rows)
    for k, v in rows.items():
        print(f"{k}: {v}")
    print(f"wrote {args.out / 'MODEL_CARD.md'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
