"""The keyboard page's own latency per keystroke in a real browser: request sent to both suggestion rows shown.

Starts `nextchar serve` (the default model unless --run), opens the page in Debian's chromium (Playwright,
headless), types texts in several scripts one key at a time the way a person does (each key after the
suggestions for the last one are shown), and prints what the page measured itself (window.nextcharLatencies:
from sending /v1/predict and /v1/complete together to both answers rendered). The target is 50 ms. It also
prints the server's CPU time per keystroke (from /healthz), which a busy machine does not inflate the way it
inflates wall-clock latency.

    python benchmarks/page_latency.py [--run RUN] [--threads 1] [--chars 300] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx
import numpy as np

from nextchar.errors import UserError
from nextchar.serve import server_process

CHROMIUM = "/usr/bin/chromium"
TEXTS = [
    "The quick brown fox jumps over the lazy dog. Every morning the old librarian opened the windows. ",
    "Le vieux château dominait la vallée depuis plus de huit siècles. Où est la boulangerie ? ",
    "Москва — столица России и один из крупнейших городов Европы. Летом в парках гуляют семьи. ",
    "ירושלים היא עיר עתיקה עם היסטוריה ארוכה ומרתקת. בכל שנה מגיעים אליה מבקרים רבים. ",
]
READY = """t => { const b = document.getElementById('board');
                 return b.dataset.ready === 'true' && b.dataset.prefix === t; }"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="run or export folder (default: the shipped default model)")
    ap.add_argument("--backend", default="auto", help="auto (the ONNX form where the folder has one), torch, onnx, onnx-int8")
    ap.add_argument("--threads", type=int, default=1, help="the server's threads")
    ap.add_argument("--chars", type=int, default=300, help="keystrokes in all (spread over the texts)")
    ap.add_argument("--screenshot", default=None, help="also save the page after the last keystroke (PNG)")
    args = ap.parse_args(argv)
    if args.chars < 1:
        raise UserError(f"--chars {args.chars}: must be at least 1")
    if not Path(CHROMIUM).is_file():
        raise UserError(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from nextchar.models import default_model

    run = args.run or str(default_model())
    per_text = -(-args.chars // len(TEXTS))
    with server_process(run, backend=args.backend, threads=args.threads) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_function("document.body.dataset.keys === 'ready'")
        page.wait_for_function(READY, arg="")
        box = page.locator("#text")
        box.click()
        page.evaluate("window.nextcharLatencies.length = 0")  # the first load also computed the keys
        cpu0 = httpx.get(url + "healthz").json()["cpu_s"]
        typed = 0
        for t in TEXTS:
            page.evaluate("document.getElementById('text').value = ''")
            box.press("End")
            for ch in t[:per_text]:
                page.keyboard.type(ch)
                typed += 1
                page.wait_for_function(READY, arg=page.evaluate("document.getElementById('text').value"))
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        lat = np.array(page.evaluate("window.nextcharLatencies"))
        cpu = httpx.get(url + "healthz").json()["cpu_s"] - cpu0
        model = page.locator("#model").inner_text()
        browser.close()
    if not len(lat):
        raise UserError("the page measured no keystroke")
    print(f"model {model}, backend {args.backend}, server threads {args.threads}: {typed} keystrokes, "
          f"{len(lat)} measured")
    print(f"page latency per keystroke (ms): p50 {np.percentile(lat, 50):.1f}  p90 {np.percentile(lat, 90):.1f}  "
          f"p99 {np.percentile(lat, 99):.1f}  mean {lat.mean():.1f}  max {lat.max():.1f}  "
          f"under 50 ms: {(lat < 50).mean():.1%}")
    print(f"server CPU per keystroke: {cpu / typed * 1000:.1f} ms (predict + complete, all threads)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
