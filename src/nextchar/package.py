"""`nextchar package`: a run's best weights, config, vocabulary and model card as a shippable model folder; with a
count model, the combined default model (package_combined)."""

from __future__ import annotations

import shutil
from pathlib import Path

from nextchar import checkpoint, files, runfiles, safefs
from nextchar.engine.folder import ONNX_FORM, data_dir, describe, write_description
from nextchar.errors import UserError
from nextchar.export import export

# a package_model folder's entries, and a package_combined folder's
PACKAGE_ENTRIES = {"config.json", "vocab.json", "MODEL_CARD.md", "checkpoints", ONNX_FORM, "transformer", "counts",
                   "eval_test.json", "eval_stream_test.json"}


def is_package(folder: Path) -> bool:
    """Whether a folder holds a package_model() output and nothing else (dot-files aside)."""
    names = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    return "MODEL_CARD.md" in names and names <= PACKAGE_ENTRIES


def _check_out(run: Path, out: Path, force: bool) -> None:
    """Refuse an --out whose replacement would lose something: the run (or a folder holding it), a file, or a
    non-empty folder that is not a previous package (unless force)."""
    r, o = run.resolve(), out.resolve()
    if o == r or r.is_relative_to(o) or o.is_relative_to(r):
        where = "is the run itself" if o == r else "holds the run" if r.is_relative_to(o) else "is inside the run"
        raise UserError(f"{out}: --out {where}; package writes a new folder, give one outside {run}")
    if o == Path(o.anchor) or Path.cwd().resolve().is_relative_to(o):
        raise UserError(f"{out}: --out holds the current folder; give a new or empty folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: is a file; give a folder for the package")
    try:
        empty = not any(out.iterdir())
        previous = not empty and is_package(out)
    except OSError as e:
        raise UserError(f"{out}: cannot list ({e.strerror})") from None
    if not (empty or previous or force):
        first = sorted(p.name for p in out.iterdir())[0]
        raise UserError(f"{out}: not empty and not a previous package (it holds {first!r}); package replaces "
                        "--out as a whole: give a new folder, or --force to replace it")


def _staging(out: Path) -> Path:
    """A new empty folder beside out to build a package in (safefs.staging_dir); UserError when it cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return safefs.staging_dir(out, "package")
    except OSError as e:
        raise UserError(f"{out}: cannot create ({e.strerror or e})") from None


def _abandon(work: Path, out: Path, e: BaseException) -> None:
    """After a failed build in the staging folder `work`: remove it and turn a full disk or another OSError into
    a one-line UserError saying that out is as it was (other exceptions are left to the caller to re-raise)."""
    safefs.rmtree(work)
    if safefs.is_no_space(e):
        raise safefs.no_space_error(Path(e.filename or work), None, f"{out} is as it was") from None
    if isinstance(e, OSError):
        raise UserError(f"{e.filename or out}: cannot write ({e.strerror or e}); {out} is as it was") from None


def package_model(run: str | Path, out: str | Path, command: str = "", half: bool = False,
                  onnx: bool = False, force: bool = False, card: bool = True) -> Path:
    """Copy a run's best weights (no optimizer state), config and vocabulary, and write MODEL_CARD.md.

    half=True stores the weights as float16 (half the size; they are widened to float32 again on load).
    onnx=True also writes the model's ONNX form into OUT/onnx (an export folder, parity-checked against the
    packaged PyTorch weights), which engine.load runs without torch. card=False writes no model card (a part
    of a combined model), so the run needs no test evaluation.
    The package is built beside out and replaces it in one rename (safefs.replace_dir): out is at every instant
    the previous package, whole, or the new one; the run is only read. Raises UserError when out is the run or
    holds it, is a file, or is a non-empty folder that is not a previous package (force=True replaces that).
    """
    run, out = Path(run), Path(out)
    if out.is_symlink():
        out = out.resolve()
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found")
    _check_out(run, out, force)
    ck = checkpoint.find(run, "best")
    if ck is None:
        kind = describe(run).kind if (run / "config.json").exists() else None
        if kind == "mixture":
            raise UserError(f"{run}: a combined model folder, not a training run; package its Transformer run with "
                            "--counts COUNTS instead")
        raise UserError(f"{run}: run has no best checkpoint to package")
    test = result = None
    if card:
        if not (run / "eval_test.json").exists():
            raise UserError(f"{run / 'eval_test.json'}: test evaluation not found (run `nextchar eval --run RUN --split test` "
                            "first)")
        test = runfiles.eval_result(run / "eval_test.json")
        result = runfiles.train_result(run / "result.json")
    cfg = describe(run).config
    weights, _, state = checkpoint.load(ck, with_optimizer=False)
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    state = {k: v for k, v in state.items() if k not in ("optimizer", "sampler", "rng", "files")}
    text = model_card(cfg, result, test, command, half).encode("utf-8") if card else None
    work = _staging(out)
    try:
        write_description(work, cfg)
        files.atomic_write_bytes(work / "vocab.json", (run / "vocab.json").read_bytes())
        checkpoint.save(work, weights, None, state, tags=("best", "latest"))
        if text is not None:
            files.atomic_write_bytes(work / "MODEL_CARD.md", text)
        if onnx:
            export(work, work / ONNX_FORM, positions=0)
            meta = files.read_json(work / ONNX_FORM / "config.json", "export config")
            meta.get("source", {})["run"] = str(out.resolve())  # where the package lives, not where it was built
            files.atomic_write_json(work / ONNX_FORM / "config.json", meta)
        safefs.replace_dir(work, out)
    except BaseException as e:
        _abandon(work, out, e)
        raise
    return out


def model_card(cfg: dict, result: dict, test: dict, command: str, half: bool = False) -> str:
    """A short description of a packaged model: what it is, how it was trained, its test metrics."""
    m = cfg["model"]
    ngrams = (f", hashed 2..{m['ngram_order']}-gram inputs ({m['ngram_buckets']:,} table rows)"
              if m.get("ngram_buckets") else "")
    stored = ("Weights stored as float16 (`nextchar package --half`); the test metrics below are the float32 run's."
              if half else "")
    lines = [
        "# nextchar default model", "",
        f"A {m['variant']} character Transformer: {m['n_layers']} layers, width {m['d_model']}, {m['n_heads']} heads, "
        f"feed-forward {m['d_ff']}, context {m['context']} characters{ngrams}, {result['params']:,} parameters, "
        f"vocabulary of {m['vocab_size']} symbols over {len(cfg.get('languages', []))} languages "
        f"({', '.join(cfg.get('languages', []))}).", "", *([stored, ""] if stored else []),
        f"Trained with nextchar's own pipeline for {result['train_seconds'] / 60:.1f} minutes "
        f"({result['steps']:,} steps, {result['tokens']:,} characters) on {result.get('device', '?')}; "
        f"best dev loss {result['best_dev_loss']:.4f} nats (step {result.get('best_step', '?')}).", "",
        "Command:", "", "```sh", command or "(not recorded)", "```", "",
        f"## Test metrics ({test['positions']} positions per language, `nextchar eval --run MODEL --split test`)", "",
        "| language | top-1 | top-3 | bits/char |", "|---|---|---|---|",
    ]
    for lang, r in test["languages"].items():
        lines.append(f"| {lang} | {r['top1']:.2%} | {r['top3']:.2%} | {r['bpc']:.3f} |")
    for name in ("macro", "micro"):
        r = test[name]
        lines.append(f"| **{name}** | **{r['top1']:.2%}** | **{r['top3']:.2%}** | **{r['bpc']:.3f}** |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ the combined model


def package_combined(run: str | Path, counts: str | Path, out: str | Path, data: str | Path | None = None,
                     commands: dict[str, str] | None = None, method: str = "loglinear", positions: int = 2000,
                     keep_torch: bool = False, stream_chars: int = 20000, eval_positions: int = 2000,
                     force: bool = False) -> Path:
    """The shipped default model: a Transformer run (its ONNX form, float16) and a count model, combined by a
    rule fitted on dev, in one folder that travels, with eval_test.json, eval_stream_test.json and MODEL_CARD.md.

    OUT/transformer: the run packaged with --half --onnx (keep_torch=False drops its PyTorch weights: the ONNX
    form is what a torch-free install runs, and both do not fit the size budget beside the count tables);
    OUT/counts: a copy of the count model; OUT/config.json: the mixture (mix.make_mixture). commands: the
    training commands for the card ("transformer", "counts", "package"). out is replaced whole or not at all;
    it is refused, as package_model refuses it, when that would lose something (force: a foreign folder).
    """
    from nextchar import engine
    from nextchar.data import open_data
    from nextchar.evaluate import evaluate, evaluate_stream
    from nextchar.mix import make_mixture

    run, counts, out = Path(run), Path(counts), Path(out)
    if describe(counts).kind != "counts":
        raise UserError(f"{counts}: not a count model folder (nextchar train --model counts)")
    if out.is_symlink():
        out = out.resolve()
    for part in (run, counts):
        _check_out(part, out, force)
    ds = open_data(data_dir(describe(run), data))
    work = _staging(out)
    try:  # built beside out and swapped in whole, as package_model does
        tr = package_model(run, work / "transformer", half=True, onnx=True, card=False)
        if not keep_torch:
            safefs.rmtree(tr / "checkpoints")
        shutil.copytree(counts, work / "counts", ignore=shutil.ignore_patterns("eval_*.json", "*.lock"))
        make_mixture(tr, work / "counts", work, ds.path, positions, method)
        hint = f"data/{Path(ds.path).name}"  # where the data is in a checkout (the folder's own path would not travel)
        for folder in (work, tr, work / "counts"):
            cfg = describe(folder).config
            cfg["data"] = hint
            if folder == work:
                cfg["commands"] = dict(commands or {})
            write_description(folder, cfg)
        meta = files.read_json(tr / ONNX_FORM / "config.json", "export config")
        meta["data"] = hint
        meta["source"] = dict(meta.get("source", {}), run="..", data=hint)  # the package around it: travels
        files.atomic_write_json(tr / ONNX_FORM / "config.json", meta)
        pred = engine.load(work)
        files.atomic_write_json(work / "eval_test.json", evaluate(pred, ds, "test", eval_positions))
        files.atomic_write_json(work / "eval_stream_test.json", evaluate_stream(pred, ds, "test", stream_chars))
        write_combined_card(work, commands)
        safefs.replace_dir(work, out)
    except BaseException as e:
        _abandon(work, out, e)
        raise
    return out


def write_combined_card(out: str | Path, commands: dict[str, str] | None = None, cost: dict | None = None) -> Path:
    """MODEL_CARD.md of a combined folder from its config.json, its parts' and its eval_*.json (cost: optional
    figures measured by benchmarks/build_default.py, written under "Cost")."""
    out = Path(out)
    cfg = describe(out).config
    tr_cfg = describe(out / cfg["components"][0]).config
    cm_cfg = describe(out / cfg["components"][1]).config
    static = files.read_json(out / "eval_test.json", "test evaluation")
    stream = files.read_json(out / "eval_stream_test.json", "streaming evaluation")
    commands = commands or cfg.get("commands") or {}
    m, c, rule, fit = tr_cfg["model"], cm_cfg["counts"], cfg["rule"], cfg.get("fit", {})
    mb = files.folder_bytes(out) / 1e6
    lines = [
        "# nextchar default model", "",
        f"Two predictors combined, {len(cfg.get('languages', []))} languages ({', '.join(cfg.get('languages', []))}), "
        f"vocabulary of {m['vocab_size']} symbols, {mb:.1f} MB on disk:", "",
        f"- `transformer/`: a {m['variant']} character Transformer, {m['n_layers']} layers, width {m['d_model']}, "
        f"{m['n_heads']} heads, feed-forward {m['d_ff']}, context {m['context']} characters"
        + (f", hashed 2..{m['ngram_order']}-gram inputs ({m['ngram_buckets']:,} rows)" if m.get("ngram_buckets") else "")
        + "; its ONNX form with float16 weights (`nextchar package --half --onnx`), which runs without torch"
        + ("" if (out / cfg["components"][0] / "checkpoints").is_dir() else " (the PyTorch weights are not shipped)")
        + ".",
        f"- `counts/`: the language-aware count model: per-language interpolated Kneser-Ney of order {c['order']} "
        f"(likelihood pruning {c['prune']} nats, {c['bits']}-bit terms) mixed by the posterior probability of each "
        "language given the text so far (docs/counts.md).",
        f"- the rule (`config.json`): {rule['method']}, {max(1, len(rule.get('coef') or rule.get('weights') or [0]))} "
        f"cells by " + (", ".join(f for f, _ in rule.get("cells", [])) or "none")
        + f", fitted on {fit.get('positions', 0):,} dev positions (`nextchar mix`; dev {fit.get('dev_bpc', {}).get('mixture', float('nan')):.3f} bpc"
        " on them).", "",
        "Sessions (`nextchar serve` with a session id, word completion) adapt to the user's own text with the "
        "cache model of `nextchar.adapt`; the streaming figures below include it.", "",
        "Commands:", "", "```sh", *(commands.get(k, f"({k}: not recorded)") for k in ("transformer", "counts", "package")),
        "```", "",
        f"## Test metrics (`nextchar eval --run MODEL --split test`, {static['positions']} positions per language; "
        f"`nextchar eval --run MODEL --stream --split test`, the first {stream['chars']:,} characters)", "",
        "| language | top-1 | top-3 | bits/char | streaming bits/char, static | streaming, adapting |",
        "|---|---|---|---|---|---|",
    ]
    for lang, r in static["languages"].items():
        s = stream["languages"].get(lang, {})
        lines.append(f"| {lang} | {r['top1']:.2%} | {r['top3']:.2%} | {r['bpc']:.3f} | "
                     f"{s.get('static', {}).get('bpc', float('nan')):.3f} | {s.get('bpc', float('nan')):.3f} |")
    for name in ("macro", "micro"):
        r, s, ss = static[name], stream[name], stream.get(f"{name}_static", {})
        lines.append(f"| **{name}** | **{r['top1']:.2%}** | **{r['top3']:.2%}** | **{r['bpc']:.3f}** | "
                     f"**{ss.get('bpc', float('nan')):.3f}** | **{s['bpc']:.3f}** |")
    if cost:
        lines += ["", "## Cost (`python benchmarks/build_default.py`)", "", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in cost.items()]
    files.atomic_write_bytes(out / "MODEL_CARD.md", ("\n".join(lines) + "\n").encode("utf-8"))
    return out / "MODEL_CARD.md"
