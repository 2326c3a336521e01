"""Command-line interface: each command parses its options and calls one library function."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from nextchar.errors import UserError, check_int

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multilingual next-character prediction for text entry.")


def friendly(fn):
    """Turn a UserError into a one-line message and exit code 2, and Ctrl-C into exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:  # a full disk anywhere a command writes is the user's to fix, not a traceback
            from nextchar.safefs import is_no_space, no_space_error

            if not is_no_space(e):
                raise
            typer.echo(f"error: {no_space_error(e.filename or '(a file being written)')}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def threads_option(n: int) -> None:
    """Torch's threads, for commands that train or run PyTorch anyway (prediction passes threads to engine.load)."""
    from nextchar.runtime import set_threads

    set_threads(n)


Threads = Annotated[int, typer.Option(help="CPU threads (0 = all cores).")]
# The names of engine.load.BACKENDS (the CLI imports no engine before a command runs; a test keeps them in step).
Backend = Annotated[str, typer.Option(help="auto (ONNX when the folder has it, else PyTorch), torch, onnx or onnx-int8 "
                                           "(the ONNX form's int8 weights).")]
MAX_THREADS = 4096


def check_threads(threads: int | None) -> None:
    if threads is not None:
        check_int(threads, "--threads", 0, MAX_THREADS)


def warn_unknown(pred, prefix: str) -> None:
    """One line on stderr when most of the prefix's context is outside the model's vocabulary."""
    from nextchar.engine.base import MOSTLY_UNKNOWN, UNKNOWN_WINDOW

    share = pred.unknown_share(prefix)
    if share >= MOSTLY_UNKNOWN:
        n = min(UNKNOWN_WINDOW, len(pred.encode(prefix)))
        typer.echo(f"warning: {share:.0%} of the last {n} characters are outside the model's vocabulary (another "
                   "script or language?): these suggestions are guesses", err=True)


@app.command()
@friendly
def prepare(
    out: Annotated[Path, typer.Option("--out", help="Data directory to write.")],
    corpus: Annotated[Path | None, typer.Option(help="Folder of <lang>.txt UTF-8 files (default: Dasher texts).")] = None,
    min_count: Annotated[int, typer.Option(help="Keep characters seen at least this often in train.")] = 2,
):
    """Normalize a corpus, split it per language and write the vocabulary and token arrays."""
    from nextchar.corpus import prepare as run

    check_int(min_count, "--min-count")
    run(out, corpus, min_count)


@app.command()
@friendly
def train(
    data: Annotated[Path, typer.Option(help="Prepared data directory.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    preset: Annotated[str | None, typer.Option(help="Named configuration (see configs/ and `nextchar presets`).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with \\[model] and \\[train] tables.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. model.n_layers=4 (repeatable).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Budget in optimizer steps.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Budget in training characters.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Budget in wall-clock minutes of training.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (0 = all cores).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its latest checkpoint.")] = False,
    model: Annotated[str, typer.Option(help="transformer; ngram for the Kneser-Ney baseline; counts for the language-aware count model.")] = "transformer",
    order: Annotated[int, typer.Option(help="n-gram order (--model ngram: 0 = choose on dev; --model counts: 0 = its default, 12).")] = 0,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model (default: on for CUDA, off on CPU).")] = None,
    grad_checkpoint: Annotated[bool | None, typer.Option("--grad-checkpoint/--no-grad-checkpoint", help="Recompute each layer in the backward pass (less memory, more time).")] = None,
    grow: Annotated[str | None, typer.Option(help="LAYERS@FRACTION, e.g. 4@0.3: train 4 layers for 30% of the budget, then grow to model.n_layers.")] = None,
    lang_temperature: Annotated[float | None, typer.Option(help="Sample languages with p ~ size^T (1 = proportional, 0 = uniform).")] = None,
    augment_lower: Annotated[float | None, typer.Option(help="Probability of lower-casing a training sequence.")] = None,
    augment_strip_accents: Annotated[float | None, typer.Option(help="Probability of dropping a training sequence's accents.")] = None,
):
    """Train a model (a CharTransformer, the n-gram baseline or the language-aware count model) into a run directory.

    Several GPUs or machines: launch this same command with torchrun, e.g.
    torchrun --standalone --nproc_per_node=8 -m nextchar train ...
    """
    if model == "ngram":
        from nextchar.train_ngram import train_ngram

        train_ngram(data, out, order or None)
        return
    if model == "counts":
        from nextchar.counts import CountsConfig
        from nextchar.train_counts import train_counts

        train_counts(data, out, CountsConfig(order=order) if order else None)
        return
    if model != "transformer":
        raise UserError(f"--model {model!r}: choose transformer, ngram or counts")
    from nextchar.train import train_from_options

    budget = {"max_steps": max_steps, "max_tokens": max_tokens, "max_minutes": max_minutes, "device": device,
              "threads": threads, "compile": compile, "grad_checkpoint": grad_checkpoint, "grow": grow,
              "lang_temperature": lang_temperature, "augment_lower": augment_lower,
              "augment_strip_accents": augment_strip_accents}
    train_from_options(str(data), str(out), preset, str(config) if config else None, set_ or [], resume, budget)


@app.command("eval")
@friendly
def eval_(
    run: Annotated[str, typer.Option("--run", "--model", help="Run or model folder, or a shipped model's name (default).")],
    split: Annotated[str, typer.Option(help="dev or test.")] = "test",
    data: Annotated[Path | None, typer.Option(help="Data directory (default: the one the run was trained on, if found).")] = None,
    positions: Annotated[int, typer.Option(help="Evenly spaced positions per language.")] = 2000,
    device: Annotated[str, typer.Option(help="cpu or cuda (a Transformer run on a GPU).")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Results file, or a folder for eval_<split>.json (default: the run folder; the current folder for a shipped model).")] = None,
    backend: Backend = "auto",
    threads: Threads = 0,
    stream: Annotated[bool, typer.Option("--stream", help="Streaming: read each language's text in order from its start, predict each character, then let the session learn it; writes eval_stream_<split>.json.")] = False,
    chars: Annotated[int, typer.Option(help="With --stream: characters read per language (the same for every model).")] = 20000,
    stride: Annotated[int | None, typer.Option(help="With --stream: the typing window's stride (default: half the model's context).")] = None,
):
    """Per-language top-1/top-3 accuracy, cross-entropy and bits per character; writes eval_<split>.json."""
    from nextchar.evaluate import eval_run, format_table
    from nextchar.runtime import resolve_device

    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: choose cpu or cuda")
    check_int(positions, "--positions")
    check_threads(threads)
    if not stream and (chars != 20000 or stride is not None):
        raise UserError("--chars and --stride go with --stream")
    res = eval_run(run, split, data, positions, backend=backend, device=resolve_device(device), out=out,
                   threads=threads, progress=not stream, stream=stream, chars=chars, stride=stride)
    typer.echo(format_table(res))
    if stream:
        m = res.get("macro_static")
        if m:
            typer.echo(f"static (no adaptation): top-1 {m['top1']:.2%} top-3 {m['top3']:.2%} bpc {m['bpc']:.3f}")
    typer.echo(f"wrote {res['out']}")


@app.command()
@friendly
def predict(
    prefix: Annotated[str | None, typer.Argument(help="Text typed so far.")] = None,
    run: Annotated[str | None, typer.Option("--run", "--model", help="Run or model folder, or a shipped model's name (default: the model shipped with nextchar).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many characters to suggest.")] = 3,
    input: Annotated[Path | None, typer.Option("--input", help="File of prefixes, one per line (UTF-8, or UTF-16/32 with a byte-order mark).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Where file mode writes k characters per line.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Write JSON (one line per prefix: chars, probs, unknown_share) instead of text.")] = False,
    backend: Backend = "auto",
    threads: Threads = 0,
):
    """Suggest the k most likely next characters for a prefix, or for every line of a file.

    A prefix that starts with '-' goes after '--', e.g. nextchar predict -- "-5 degr".
    """
    from nextchar import engine
    from nextchar.files import dumps
    from nextchar.predict import predict_file, record

    if (input is None) == (prefix is None):
        raise UserError("give either a PREFIX argument or --input FILE (with --output FILE)")
    if input is not None and output is None:
        raise UserError("--input needs --output FILE")
    check_int(k, "-k")
    check_threads(threads)
    pred = engine.load(resolve_run(run), backend=backend, threads=threads)
    if input is not None:
        n = predict_file(pred, input, output, k, json_)
        typer.echo(f"wrote {n} line{'' if n == 1 else 's'} to {output}", err=True)
        return
    row = pred.topk(prefix, k)
    if json_:
        typer.echo(dumps(record(prefix, row, pred.unknown_share(prefix))))
    else:
        for ch, p in row:
            typer.echo(f"{show(ch)}\t{p:.4f}")
    warn_unknown(pred, prefix)


@app.command()
@friendly
def complete(
    prefix: Annotated[str | None, typer.Argument(help="Text typed so far.")] = None,
    run: Annotated[str | None, typer.Option("--run", "--model", help="Run or model folder, or a shipped model's name (default: the model shipped with nextchar).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many completions.")] = 3,
    input: Annotated[Path | None, typer.Option("--input", help="File of prefixes, one per line (UTF-8, or UTF-16/32 with a byte-order mark).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Where file mode writes tab-separated completions per line.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Write JSON (one line per prefix: completions, probs, unknown_share) instead of text.")] = False,
    beam: Annotated[int, typer.Option(help="Hypotheses kept per search step.")] = 4,
    backend: Backend = "auto",
    threads: Threads = 1,
):
    """Suggest the k most likely ways to finish the current word (the rest of the word and its probability).

    A prefix that starts with '-' goes after '--', e.g. nextchar complete -- "-5 degr".
    """
    from nextchar import engine
    from nextchar.complete import CompletionConfig, complete_file, record
    from nextchar.complete import complete as run_complete
    from nextchar.files import dumps

    if (input is None) == (prefix is None):
        raise UserError("give either a PREFIX argument or --input FILE (with --output FILE)")
    if input is not None and output is None:
        raise UserError("--input needs --output FILE")
    check_int(k, "-k")
    check_int(beam, "--beam", 1, 10_000)
    check_threads(threads)
    threads_option(threads)
    cfg = CompletionConfig(beam=beam)
    pred = engine.load(resolve_run(run), backend=backend, threads=threads)
    if input is not None:
        n = complete_file(pred, input, output, k, json_, cfg)
        typer.echo(f"wrote {n} line{'' if n == 1 else 's'} to {output}", err=True)
        return
    rows = run_complete(pred, prefix, k, config=cfg)
    if json_:
        typer.echo(dumps(record(pred, prefix, rows)))
    else:
        for rest, p in rows:
            typer.echo(f"{rest}\t{p:.4f}")
    warn_unknown(pred, prefix)


def show(ch: str) -> str:
    """A suggestion as text a terminal can show: spaces and invisible characters named."""
    return {" ": "<space>"}.get(ch, ch) if ch.isprintable() else f"U+{ord(ch):04X}"


def resolve_run(run: str | None) -> str | Path:
    """A --run value (a folder or a shipped model's name), or the shipped default model when none is given."""
    if run is not None:
        return run
    from nextchar import models

    return models.default_model()


@app.command()
@friendly
def params(
    preset: Annotated[str, typer.Option(help="Named configuration.")],
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size (characters + specials).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. model.n_layers=4.")] = None,
):
    """Print the parameter count of a preset for a given vocabulary size."""
    from nextchar import config
    from nextchar.model import CharTransformer

    cfg = config.load(preset, None, set_ or [])
    cfg.model.vocab_size = vocab_size
    if vocab_size < 1:
        raise UserError(f"--vocab-size {vocab_size}: must be at least 1")
    typer.echo(f"{CharTransformer(cfg.model).num_params():,}")


@app.command()
def presets():
    """List the named configurations."""
    from nextchar.config import PRESETS

    for name, p in sorted(PRESETS.items()):
        m = p["model"]
        typer.echo(f"{name:<16} {m.get('variant', 'modern'):<7} d={m.get('d_model')} layers={m.get('n_layers')} "
                   f"heads={m.get('n_heads')} ff={m.get('d_ff')} dropout={m.get('dropout')}"
                   + (f" ngram-inputs={m['ngram_buckets']}x2..{m.get('ngram_order', 4)}" if m.get("ngram_buckets") else ""))


@app.command()
@friendly
def quickstart(
    data: Annotated[Path, typer.Option(help="Data directory (prepared from Dasher if missing).")] = Path("data/dasher"),
    run: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/quickstart"),
    preset: Annotated[str, typer.Option(help="Model preset.")] = "quick",
    minutes: Annotated[float, typer.Option(help="Transformer training budget in minutes.")] = 14.0,
    threads: Threads = 0,
):
    """The main job: prepare Dasher, train a Transformer and the count model on CPU, combine them, evaluate on test, suggest."""
    from nextchar.quickstart import quickstart as run_quickstart

    run_quickstart(data, run, preset, minutes, threads)


study_app = typer.Typer(no_args_is_help=True, help="Architecture study: sweep a grid, write the report.")
app.add_typer(study_app, name="study")


@study_app.command("run")
@friendly
def study_run(
    grid: Annotated[list[Path], typer.Argument(help="TOML grid(s) of named configurations (see configs/study-*.toml).")],
    data: Annotated[Path, typer.Option(help="Prepared data directory.")],
    out: Annotated[Path, typer.Option(help="Study directory (one run directory per point).")],
    budget_tokens: Annotated[int | None, typer.Option(help="Training characters per configuration.")] = None,
    budget_minutes: Annotated[float | None, typer.Option(help="Training minutes per configuration.")] = None,
    eval_positions: Annotated[int | None, typer.Option(help="Test positions per language for each point (default 2000, or the study's).")] = None,
    dev_evals: Annotated[int | None, typer.Option(help="Dev evaluations per point for the learning curves (token budgets; default 5, or the study's).")] = None,
    ngram: Annotated[bool, typer.Option(help="Add the Kneser-Ney n-gram baseline row.")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override for every point, e.g. train.warmup_steps=20 (repeatable).")] = None,
    threads: Threads = 0,
):
    """Train every configuration of the grid(s) with the same budget (resumable), then write the report."""
    from nextchar.study import run_study

    threads_option(threads)
    path = run_study(grid, data, out, budget_tokens=budget_tokens, budget_minutes=budget_minutes,
                     eval_positions=eval_positions, ngram=ngram, threads=threads, dev_evals=dev_evals,
                     sets=set_ or [])
    typer.echo(f"wrote {path}")


@study_app.command("report")
@friendly
def study_report(
    study: Annotated[Path, typer.Argument(help="Study directory written by `nextchar study run`.")],
    max_train_minutes: Annotated[float | None, typer.Option(help="Recommend only configurations trained within this.")] = None,
    max_params: Annotated[int | None, typer.Option(help="Recommend only configurations with at most this many parameters.")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Recommend only configurations this fast per keystroke.")] = None,
):
    """Write report.md, results.csv and plots/*.png from a study's run directories (never trains)."""
    from nextchar.study import write_report

    path = write_report(study, max_train_minutes=max_train_minutes, max_params=max_params,
                        max_latency_ms=max_latency_ms)
    typer.echo(f"wrote {path}")


@app.command()
@friendly
def serve(
    run: Annotated[str | None, typer.Option("--run", "--model", help="Run, model or export folder, or a shipped model's name (default: the shipped model).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    backend: Backend = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads of the model (0 = all cores).")] = 1,
    max_per_address: Annotated[int, typer.Option(help="Open connections per client address (0 = no bound; raise it behind a reverse proxy).")] = 256,
    workers: Annotated[int, typer.Option(help="Server processes on the one port (each loads the model; sessions are shared).")] = 1,
    sessions_db: Annotated[Path | None, typer.Option(help="SQLite file for the sessions' remembered text, shared by every server given it (default: in memory; a private temporary file with --workers).")] = None,
):
    """Serve predictions over HTTP (JSON API + the web keyboard page at /)."""
    import dataclasses

    from nextchar.serve import default_limits
    from nextchar.serve import serve as run_server

    check_threads(threads)
    if max_per_address < 0:
        raise UserError(f"--max-per-address {max_per_address}: must be >= 0 (0 = no bound)")
    limits = dataclasses.replace(default_limits(), per_address=max_per_address)
    run_server(resolve_run(run), host=host, port=port, backend=backend, threads=threads, limits=limits,
               workers=workers, sessions_db=sessions_db)


@app.command()
@friendly
def export(
    run: Annotated[Path, typer.Option(help="Run directory to export.")],
    out: Annotated[Path, typer.Option(help="Folder to write (model, vocabulary, config).")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    int8: Annotated[bool, typer.Option(help="Also quantize weights to int8 and report the accuracy change.")] = False,
    eval_positions: Annotated[int, typer.Option(help="Dev positions per language for the int8 accuracy change.")] = 200,
    threads: Threads = 0,
):
    """Export a run to a self-contained ONNX folder (optionally int8) and check parity."""
    from nextchar.export import export as run_export
    from nextchar.export import format_summary

    check_int(eval_positions, "--eval-positions", 0)
    threads_option(threads)
    typer.echo(format_summary(run_export(run, out, fmt=format, int8=int8, positions=eval_positions)))


@app.command()
@friendly
def mix(
    transformer: Annotated[Path, typer.Option(help="Transformer run or model folder.")],
    out: Annotated[Path, typer.Option(help="Mixture folder to write.")],
    counts: Annotated[Path | None, typer.Option(help="Count model folder (nextchar train --model counts).")] = None,
    ngram: Annotated[Path | None, typer.Option(help="n-gram run folder (nextchar train --model ngram), instead of --counts.")] = None,
    method: Annotated[str, typer.Option(help="loglinear (weights per cell, renormalized), cells (linear weight per cell) or linear (one weight).")] = "loglinear",
    data: Annotated[Path | None, typer.Option(help="Data directory for fitting (default: the Transformer's).")] = None,
    positions: Annotated[int, typer.Option(help="Dev positions per language for fitting the rule.")] = 2000,
    threads: Threads = 0,
):
    """Combine a Transformer with a count model (or the n-gram), the rule fitted on dev, into a folder usable by eval/predict/serve."""
    from nextchar.mix import make_mixture

    check_int(positions, "--positions")
    if (counts is None) == (ngram is None):
        raise UserError("give one of --counts DIR or --ngram DIR (the part combined with the Transformer)")
    threads_option(threads)
    make_mixture(transformer, counts or ngram, out, data, positions, method)


@app.command()
@friendly
def package(
    run: Annotated[Path, typer.Option(help="Trained run directory (with eval_test.json).")],
    out: Annotated[Path, typer.Option(help="Folder to write: best weights, config, vocabulary, MODEL_CARD.md.")],
    command: Annotated[str, typer.Option(help="The training command, recorded in the model card.")] = "",
    half: Annotated[bool, typer.Option("--half", help="Store the weights as float16 (half the size).")] = False,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write the model's ONNX form (OUT/onnx), which a torch-free install runs.")] = False,
    counts: Annotated[Path | None, typer.Option(help="A count model: package the combined default model (the run's ONNX form in float16 + the count model + a rule fitted on dev), evaluated on test, static and streaming.")] = None,
    counts_command: Annotated[str, typer.Option(help="With --counts: the count model's command, for the card.")] = "",
    data: Annotated[Path | None, typer.Option(help="With --counts: the data directory (default: the run's).")] = None,
    keep_torch: Annotated[bool, typer.Option("--keep-torch", help="With --counts: also ship the PyTorch weights.")] = False,
    threads: Threads = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out that is not a previous package.")] = False,
):
    """Package a run's best weights with a model card (with --counts: the combined default model)."""
    from nextchar.package import package_combined, package_model

    threads_option(threads)
    if counts is not None:
        commands = {"transformer": command, "counts": counts_command, "package": "nextchar " + " ".join(sys.argv[1:])}
        typer.echo(f"wrote {package_combined(run, counts, out, data, commands, keep_torch=keep_torch, force=force)}")
        return
    typer.echo(f"wrote {package_model(run, out, command, half, onnx, force=force)}")


def main() -> None:
    app(prog_name="nextchar")


if __name__ == "__main__":
    main()
    sys.exit(0)
