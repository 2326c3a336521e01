"""`make quickstart`: prepare the Dasher corpus, train a small model on CPU, evaluate on test, show suggestions."""

from __future__ import annotations

import time
from pathlib import Path

from nextchar import config as config_mod
from nextchar.evaluate import eval_run, format_table
from nextchar.predict import Predictor
from nextchar.train import fmt_time, set_threads, train

# Prefixes in several scripts and directions, shown after training.
EXAMPLES = [
    "Happy New Yea",
    "Je ne sais pa",
    "Guten Mor",
    "Здравствуйт",
    "Καλημέρ",
    "שלו",
    "سلا",
    "আমার সোনার বাং",
    "",
]


def quickstart(data: Path, run: Path, preset: str = "quick", minutes: float = 10.0, threads: int = 0) -> Path:
    t0 = time.time()
    set_threads(threads)
    data, run = Path(data), Path(run)
    if not (data / "stats.json").exists():
        from nextchar.corpus import prepare

        print(f"== preparing the Dasher corpus into {data}")
        prepare(data)
    if (run / "result.json").exists():
        print(f"== {run} is already trained (delete it to train again)")
    else:
        resume = (run / "config.json").exists()
        print(f"== training preset {preset!r} for {minutes:g} minutes into {run}" + (" (resuming)" if resume else ""))
        if resume:
            cfg = config_mod.RunConfig.from_dict(config_mod.read_run_config(run))
        else:
            cfg = config_mod.load(preset)
        cfg.train.max_minutes = minutes
        cfg.train.threads = threads
        train(data, run, cfg, resume=resume, preset=preset)
    print("== evaluating on the test split")
    res = eval_run(run, "test", data)
    print(format_table(res))
    pred = Predictor.load(run)
    print("== top-3 suggestions")
    for prefix in EXAMPLES:
        sugg = "   ".join(f"{c!r} {p:.2f}" for c, p in pred.topk(prefix, 3))
        print(f"  {prefix!r:<24} -> {sugg}")
    print(f"== done in {fmt_time(time.time() - t0)}; run directory: {run.resolve()}")
    print(f"   try: nextchar predict --run {run} \"Happy New Yea\"")
    return run
