"""`make quickstart`: prepare Dasher, train a Transformer and the count model on CPU, combine them, evaluate, suggest.

The run folder is the combination (the model a user gets); its parts are RUN/transformer and RUN/counts (the
language-aware count model). The combination is there because 10-15 CPU-minutes do not train the Transformer
past the count model, while the two together, by a log-linear rule fitted on dev, beat either
(docs/quality.md has the numbers).
"""

from __future__ import annotations

import time
from pathlib import Path

from nextchar import config as config_mod
from nextchar import engine
from nextchar.engine.folder import describe
from nextchar.errors import UserError
from nextchar.evaluate import eval_run, format_table
from nextchar.runtime import set_threads
from nextchar.train import fmt_time, train

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


FIT_POSITIONS = 1000  # dev positions per language for the combination's rule (its fit takes about a minute)


def quickstart(data: Path, run: Path, preset: str = "quick", minutes: float = 14.0, threads: int = 0,
               counts_config=None, fit_positions: int = FIT_POSITIONS) -> Path:
    t0 = time.time()
    set_threads(threads)
    data, run = Path(data), Path(run)
    if (run / "config.json").exists():
        kind = describe(run).kind
        if kind != "mixture":
            raise UserError(f"{run}: holds a {kind} run, not a quickstart mixture (delete it or pick another --run)")
    if not (data / "stats.json").exists():
        from nextchar.corpus import prepare

        print(f"== preparing the Dasher corpus into {data}")
        prepare(data)
    tr, cm = run / "transformer", run / "counts"
    if (tr / "result.json").exists():
        print(f"== {tr} is already trained (delete it to train again)")
    else:
        resume = (tr / "config.json").exists()
        print(f"== training preset {preset!r} for {minutes:g} minutes into {tr}" + (" (resuming)" if resume else ""))
        if resume:
            cfg = config_mod.RunConfig.from_dict(config_mod.read_run_config(tr))
        else:
            cfg = config_mod.load(preset)
        cfg.train.max_minutes = minutes
        cfg.train.threads = threads
        # the Transformer's own result.json takes its last periodic dev evaluation: the minutes a separate final
        # evaluation would cost (2.5 of the 20) go to training, and the combination is evaluated on test below
        cfg.train.final_eval_positions = 0
        train(data, tr, cfg, resume=resume, preset=preset)
    if not (cm / "config.json").exists():
        from nextchar.counts import CountsConfig
        from nextchar.train_counts import train_counts

        print(f"== counting the language-aware count model into {cm}")
        # unpruned: a run folder has no size budget, and pruning to the shipped model's 37 MB costs about 0.4
        # points of top-3 and 0.05 bpc (docs/counts.md's size table)
        train_counts(data, cm, counts_config or CountsConfig(prune=0.0))
    if not (run / "config.json").exists():
        from nextchar.mix import make_mixture

        print(f"== combining them into {run} (log-linear rule fitted on dev)")
        make_mixture(tr, cm, run, data, fit_positions, "loglinear")
    print("== evaluating the combination on the test split")
    res = eval_run(run, "test", data)
    print(format_table(res))
    pred = engine.load(run)
    print("== top-3 suggestions")
    for prefix in EXAMPLES:
        sugg = "   ".join(f"{c!r} {p:.2f}" for c, p in pred.topk(prefix, 3))
        print(f"  {prefix!r:<24} -> {sugg}")
    print(f"== done in {fmt_time(time.time() - t0)}; run directory: {run.resolve()}")
    print(f"   try: nextchar predict --run {run} \"Happy New Yea\"")
    return run
