"""`nextchar package`: a run's best weights, config, vocabulary and model card as a shippable model folder."""

from __future__ import annotations

from pathlib import Path

from nextchar import checkpoint, files, runfiles, safefs
from nextchar.engine.folder import ONNX_FORM, describe, write_description
from nextchar.errors import UserError
from nextchar.export import export

PACKAGE_ENTRIES = {"config.json", "vocab.json", "MODEL_CARD.md", "checkpoints", ONNX_FORM}


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


def package_model(run: str | Path, out: str | Path, command: str = "", half: bool = False,
                  onnx: bool = False, force: bool = False) -> Path:
    """Copy a run's best weights (no optimizer state), config and vocabulary, and write MODEL_CARD.md.

    half=True stores the weights as float16 (half the size; they are widened to float32 again on load).
    onnx=True also writes the model's ONNX form into OUT/onnx (an export folder, parity-checked against the
    packaged PyTorch weights), which engine.load runs without torch.
    The package is built beside out and replaces it in one rename (safefs.replace_dir): out is at every instant
    the previous package, whole, or the new one; the run is only read. Raises UserError when out is the run or
    holds it, is a file, or is a non-empty folder that is not a previous package (force=True replaces that).
    """
    run, out = Path(run), Path(out)
    if out.is_symlink():
        out = out.resolve()
    _check_out(run, out, force)
    ck = checkpoint.find(run, "best")
    if ck is None:
        raise UserError(f"{run}: run has no best checkpoint to package")
    if not (run / "eval_test.json").exists():
        raise UserError(f"{run / 'eval_test.json'}: test evaluation not found (run `nextchar eval --split test` "
                        "first)")
    test = runfiles.eval_result(run / "eval_test.json")
    result = runfiles.train_result(run / "result.json")
    cfg = describe(run).config
    weights, _, state = checkpoint.load(ck, with_optimizer=False)
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    state = {k: v for k, v in state.items() if k not in ("optimizer", "sampler", "rng", "files")}
    card = model_card(cfg, result, test, command, half).encode("utf-8")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = safefs.staging_dir(out, "package")
    except OSError as e:
        raise UserError(f"{out}: cannot create ({e.strerror or e})") from None
    try:
        write_description(work, cfg)
        files.atomic_write_bytes(work / "vocab.json", (run / "vocab.json").read_bytes())
        checkpoint.save(work, weights, None, state, tags=("best", "latest"))
        files.atomic_write_bytes(work / "MODEL_CARD.md", card)
        if onnx:
            export(work, work / ONNX_FORM, positions=0)
            meta = files.read_json(work / ONNX_FORM / "config.json", "export config")
            meta.get("source", {})["run"] = str(out.resolve())  # where the package lives, not where it was built
            files.atomic_write_json(work / ONNX_FORM / "config.json", meta)
        safefs.replace_dir(work, out)
    except BaseException as e:
        safefs.rmtree(work)
        if safefs.is_no_space(e):
            raise safefs.no_space_error(Path(e.filename or work), None, f"{out} is as it was") from None
        if isinstance(e, OSError):
            raise UserError(f"{e.filename or out}: cannot write ({e.strerror or e}); {out} is as it was") from None
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
        f"## Test metrics ({test['positions']} positions per language, `nextchar eval --split test`)", "",
        "| language | top-1 | top-3 | bits/char |", "|---|---|---|---|",
    ]
    for lang, r in test["languages"].items():
        lines.append(f"| {lang} | {r['top1']:.2%} | {r['top3']:.2%} | {r['bpc']:.3f} |")
    for name in ("macro", "micro"):
        r = test[name]
        lines.append(f"| **{name}** | **{r['top1']:.2%}** | **{r['top3']:.2%}** | **{r['bpc']:.3f}** |")
    return "\n".join(lines) + "\n"
