"""Damaged run and data files (issue 14, fault 4): every command reading one (resume, predict, eval, export, serve,
package) says which file and what is wrong, in one line."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from nextchar.cli import app
from nextchar.errors import UserError
from nextchar.evaluate import eval_run
from nextchar.serve import create_app

torch.set_num_threads(1)
runner = CliRunner()
CKPT = "checkpoints/step-0000040"


@pytest.fixture(scope="module")
def evaluated_run(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(tiny_run, run)
    eval_run(run, "test", positions=5)
    assert (run / CKPT).is_dir()
    return run


def _safetensors(tmp: Path, tensors: dict) -> bytes:
    p = tmp / "t.safetensors"
    save_file(tensors, str(p))
    return p.read_bytes()


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def corruptions(run: Path, rel: str, tmp: Path):
    """(name, new bytes) for one file: truncated, empty, the wrong JSON type, a key missing, a wrong type or
    shape. The issue's examples are among them: best.json holding [] (was AttributeError)."""
    raw = (run / rel).read_bytes()
    yield "truncated", raw[: len(raw) // 2]
    yield "empty", b""
    if rel.endswith(".safetensors"):
        t = load_file(str(run / rel))
        first = sorted(t)[0]
        yield "wrong shape", _safetensors(tmp, {**t, first: torch.zeros(3, 5)})
        yield "a tensor missing", _safetensors(tmp, {k: v for k, v in t.items() if k != first})
        return
    if rel.endswith(".jsonl"):
        return
    d = json.loads(raw)
    yield "a list", b"[]"
    yield "a number", b"7"
    for key in {"config.json": ["model", "train"], "vocab.json": ["chars", "hash"], "result.json": ["params"],
                "eval_test.json": ["languages", "macro"], "best.json": ["dir"], "latest.json": ["dir"],
                "state.json": ["step", "rng", "optimizer", "files"]}[Path(rel).name]:
        yield f"no {key!r}", _json({k: v for k, v in d.items() if k != key})
        yield f"{key!r} a string", _json({**d, key: "x"})
    if Path(rel).name == "config.json":
        for k, v in (("d_model", 24), ("n_layers", 3), ("vocab_size", 7), ("d_model", "16"), ("context", 1.5)):
            yield f"model.{k}={v!r}", _json({**d, "model": {**d["model"], k: v}})
        yield "train.lr='fast'", _json({**d, "train": {**d["train"], "lr": "fast"}})
    if Path(rel).name == "state.json":
        yield "step -1", _json({**d, "step": -1})
        yield "files outside", _json({**d, "files": {"../../config.json": "0" * 64}})


# What each command reads (its files are damaged for it; files it never opens cannot stop it).
READS = {
    "predict": {"config.json", "vocab.json", "best.json", "state.json", "model.safetensors"},
    "serve": {"config.json", "vocab.json", "best.json", "state.json", "model.safetensors"},
    "eval": {"config.json", "vocab.json", "best.json", "state.json", "model.safetensors"},
    "resume": {"config.json", "latest.json", "state.json", "model.safetensors", "optim.safetensors"},
    "package": {"config.json", "vocab.json", "best.json", "state.json", "model.safetensors", "result.json",
                "eval_test.json"},
    "export": {"config.json", "vocab.json", "best.json", "state.json", "model.safetensors"},
}
FILES = ["config.json", "vocab.json", "checkpoints/best.json", "checkpoints/latest.json", f"{CKPT}/state.json",
         f"{CKPT}/model.safetensors", f"{CKPT}/optim.safetensors", "result.json", "eval_test.json",
         "metrics.jsonl"]


def run_command(cmd: str, run: Path, data: Path) -> tuple[int, str]:
    if cmd == "serve":  # what `nextchar serve` does before it listens: load the run into the app
        try:
            create_app(run)
        except UserError as e:
            return 2, f"error: {e}\n"
        return 0, ""
    args = {"predict": ["predict", "--run", run, "abc"],
            "eval": ["eval", "--run", run, "--data", data, "--split", "dev", "--positions", "3"],
            "resume": ["train", "--data", data, "--out", run, "--resume", "--max-steps", "41",
                       "--set", "train.final_eval_positions=3"],
            "package": ["package", "--run", run, "--out", run.parent / "pkg"],
            "export": ["export", "--run", run, "--format", "onnx", "--out", run.parent / "onnx",
                       "--eval-positions", "3"]}[cmd]
    r = runner.invoke(app, [str(a) for a in args] + (["--threads", "1"] if cmd != "package" else []))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a traceback: the test shows it
    return r.exit_code, r.output


@pytest.mark.parametrize("rel", FILES)
def test_each_damaged_file_is_named_by_every_command_that_reads_it(evaluated_run, tiny_data_dir, tmp_path, rel):
    cases = 0
    for name, content in corruptions(evaluated_run, rel, tmp_path):
        for cmd, reads in READS.items():
            if Path(rel).name not in reads:
                continue
            run = tmp_path / "copy" / "run"
            shutil.rmtree(run.parent, ignore_errors=True)
            shutil.copytree(evaluated_run, run)
            (run / rel).write_bytes(content)
            code, out = run_command(cmd, run, tiny_data_dir)
            cases += 1
            if code == 0:
                continue  # tolerated (e.g. a missing optional key, or a file this command re-creates)
            lines = [x for x in out.splitlines() if not x.startswith(("[", "resuming", "model:"))]
            assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rel, name, cmd, out)
            assert Path(rel).name in lines[0] or Path(rel).parent.name in lines[0], (rel, name, cmd, out)
    assert cases > 0 or rel == "metrics.jsonl"


def test_the_issues_examples(tiny_run, tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "best.json").write_text("[]")
    r = runner.invoke(app, ["predict", "--run", str(run), "a"])
    assert r.exit_code == 2 and r.output == (f"error: {run}/checkpoints/best.json: checkpoint pointer is not a JSON "
                                             'object (expected {"dir": "step-NNNNNNN"})\n')
    f = tmp_path / "F"
    f.touch()
    r = runner.invoke(app, ["train", "--data", str(tiny_data_dir), "--out", str(f), "--preset", "tiny",
                            "--max-steps", "2"])
    assert r.exit_code == 2 and r.output == f"error: {f}: is a file, not a run directory (give another --out)\n"


@pytest.mark.parametrize("name, edit, says", [
    ("stats.json", lambda d: {**d, "languages": []}, "'languages' is empty or not an object"),
    ("stats.json", lambda d: {**d, "languages": {"../../x": d["languages"]["en"]}}, "language label"),
    ("stats.json", lambda d: {**d, "languages": {**d["languages"], "en": {**d["languages"]["en"], "dev": "9"}}},
     "integer train/dev/test counts"),
    ("stats.json", lambda d: {**d, "languages": {**d["languages"], "en": {**d["languages"]["en"], "dev": -2}}},
     "integer train/dev/test counts"),
    ("stats.json", lambda d: [d], "expected a JSON object"),
    ("vocab.json", lambda d: {**d, "chars": d["chars"][:-1]}, "vocabulary hash mismatch"),
    ("vocab.json", lambda d: [d], "expected a JSON object"),
])
def test_damaged_data_dir_files(tiny_data_dir, tiny_run, tmp_path, name, edit, says):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    (data / name).write_text(json.dumps(edit(json.loads((data / name).read_text(encoding="utf-8")))))
    for args in (["train", "--data", data, "--out", tmp_path / "new", "--preset", "tiny", "--max-steps", "1"],
                 ["eval", "--run", tiny_run, "--data", data, "--positions", "3"]):
        r = runner.invoke(app, [str(a) for a in args] + ["--threads", "1"])
        assert r.exit_code == 2 and says in r.output and name in r.output and r.output.count("\n") == 1, r.output


def test_a_truncated_token_file(tiny_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    f = data / "en" / "dev.bin"
    f.write_bytes(f.read_bytes()[:-3])
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--preset", "tiny",
                            "--max-steps", "1", "--threads", "1"])
    assert r.exit_code == 2 and f"{f}: " in r.output and "re-run `nextchar prepare`" in r.output


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    from nextchar.export import export

    out = tmp_path_factory.mktemp("exp") / "onnx"
    export(tiny_run, out, positions=3, parity_prefixes=20)
    return out


@pytest.mark.parametrize("name, edit", [
    ("a list", lambda d: [d]), ("export a list", lambda d: {**d, "export": []}),
    ("files a list", lambda d: {**d, "export": {**d["export"], "files": ["model.onnx"]}}),
    ("a file outside", lambda d: {**d, "export": {**d["export"], "files": {**d["export"]["files"],
                                                                            "model": "../../x.onnx"}}}),
    ("no model", lambda d: {k: v for k, v in d.items() if k != "model"}),
    ("model.context a string", lambda d: {**d, "model": {**d["model"], "context": "32"}}),
])
def test_damaged_export_config(exported, tiny_data_dir, tmp_path, name, edit):
    folder = tmp_path / "onnx"
    shutil.copytree(exported, folder)
    cfg = folder / "config.json"
    cfg.write_text(json.dumps(edit(json.loads(cfg.read_text(encoding="utf-8")))))
    for cmd in ("predict", "serve", "eval"):
        code, out = run_command(cmd, folder, tiny_data_dir)
        assert code == 2 and out.count("\n") == 1 and "config.json" in out, (name, cmd, out)
