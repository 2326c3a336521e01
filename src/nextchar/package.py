"""`nextchar package`: a run's best weights, config, vocabulary and model card as a shippable model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from nextchar import checkpoint, files
from nextchar.engine.folder import ONNX_FORM, describe, write_description
from nextchar.errors import UserError
from nextchar.export import export


def package_model(run: str | Path, out: str | Path, command: str = "", half: bool = False,
                  onnx: bool = False) -> Path:
    """Copy a run's best weights (no optimizer state), config and vocabulary, and write MODEL_CARD.md.

    half=True stores the weights as float16 (half the size; they are widened to float32 again on load).
    onnx=True also writes the model's ONNX form into OUT/onnx (an export folder, parity-checked against the
    packaged PyTorch weights), which engine.load runs without torch.
    """
    run, out = Path(run), Path(out)
    ck = checkpoint.find(run, "best")
    if ck is None:
        raise UserError(f"{run}: run has no best checkpoint to package")
    test = files.read_json(run / "eval_test.json", "test evaluation (run `nextchar eval --split test` first)")
    weights, _, state = checkpoint.load(ck, with_optimizer=False)
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    state = {k: v for k, v in state.items() if k not in ("optimizer", "sampler", "rng", "files")}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = describe(run).config
    write_description(out, cfg)
    shutil.copy(run / "vocab.json", out / "vocab.json")
    checkpoint.save(out, weights, None, state, tags=("best", "latest"))
    result = files.read_json(run / "result.json", "result")
    files.atomic_write_bytes(out / "MODEL_CARD.md", model_card(cfg, result, test, command, half).encode("utf-8"))
    if onnx:
        export(out, out / ONNX_FORM, positions=0)
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
