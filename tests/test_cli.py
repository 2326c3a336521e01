"""The command line end to end (prepare -> train -> eval -> predict) and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nextchar.cli import app

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_end_to_end(tiny_corpus_dir, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    r = cli("prepare", "--corpus", tiny_corpus_dir, "--out", data)
    assert r.exit_code == 0, r.output
    assert "total" in r.output and json.loads((data / "stats.json").read_text())["languages"]["ru"]["train"] > 0
    r = cli("train", "--data", data, "--preset", "tiny", "--out", run, "--max-steps", 6, "--threads", 1,
            "--set", "train.eval_every=3", "--set", "model.context=24")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["model"]["context"] == 24
    r = cli("eval", "--run", run, "--split", "test", "--positions", 50, "--threads", 1)
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval_test.json").read_text())
    assert set(res["languages"]) == {"ar", "bn", "el", "emoji", "en", "fr", "he", "ru", "zh"}
    assert "macro" in r.output and "micro" in r.output
    (tmp_path / "p.txt").write_text("Hello\n\nПри\n", encoding="utf-8")
    r = cli("predict", "--run", run, "--input", tmp_path / "p.txt", "--output", tmp_path / "o.txt", "--threads", 1)
    assert r.exit_code == 0, r.output
    assert [len(x) for x in (tmp_path / "o.txt").read_text(encoding="utf-8").split("\n")] == [3, 3, 3, 0]
    r = cli("predict", "--run", run, "-k", 4, "Hello wor", "--threads", 1)
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 4
    r = cli("train", "--data", data, "--out", run, "--max-steps", 8, "--resume", "--threads", 1)
    assert r.exit_code == 0, r.output
    assert json.loads((run / "result.json").read_text())["steps"] == 8


def test_params_prints_the_study_count():
    r = cli("params", "--preset", "seed-12l", "--vocab-size", 78)
    assert r.exit_code == 0 and r.output.strip() == "2,399,310"


def test_presets_lists_every_preset_with_its_shape():
    from nextchar.config import PRESETS

    r = cli("presets")
    lines = {line.split()[0]: line for line in r.output.splitlines()}
    assert r.exit_code == 0 and set(lines) == set(PRESETS)
    assert "layers=12" in lines["best"] and "ngram-inputs=32768x2..4" in lines["quick"]
    assert "ngram-inputs" not in lines["modern-4l"]
    # the quick preset's parameters: the 4-layer network plus the 32768 x 128 hashed n-gram table
    plain = cli("params", "--preset", "modern-4l", "--vocab-size", 495).output.strip().replace(",", "")
    quick = cli("params", "--preset", "quick", "--vocab-size", 495).output.strip().replace(",", "")
    assert int(quick) == int(plain) + 32768 * 128


@pytest.mark.parametrize("args,needle", [
    (("params", "--preset", "nope", "--vocab-size", 78), "unknown preset 'nope'"),
    (("train", "--data", "{data}", "--out", "{tmp}/r", "--preset", "tiny", "--set", "model.wings=2",
      "--max-steps", 1), "unknown model key(s): wings"),
    (("train", "--data", "{data}", "--out", "{tmp}/r", "--preset", "tiny", "--set", "nokey", "--max-steps", 1),
     "expected section.key=value"),
    (("train", "--data", "{tmp}/missing", "--out", "{tmp}/r", "--max-steps", 1), "missing"),
    (("prepare", "--corpus", "{tmp}/nothing", "--out", "{tmp}/d"), "nothing"),
    (("eval", "--run", "{tmp}/norun"), "norun"),
    (("predict", "--run", "{tmp}/norun", "abc"), "norun"),
    (("eval", "--run", "{tmp}/norun", "--chars", 50), "--chars and --stride go with --stream"),
    (("mix", "--transformer", "{tmp}/a", "--out", "{tmp}/m"), "give one of --counts DIR or --ngram DIR"),
    (("train", "--data", "{data}", "--out", "{tmp}/r", "--model", "gpt"), "choose transformer, ngram or counts"),
])
def test_bad_input_gives_one_line_error(args, needle, tiny_data_dir, tmp_path):
    args = [str(a).format(data=tiny_data_dir, tmp=tmp_path) for a in args]
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert len([x for x in r.output.splitlines() if x.startswith("error:")]) == 1


def test_truncated_checkpoint_and_other_vocabulary(tiny_run, tiny_corpus_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = tmp_path / "other"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "xx.txt").write_text("completely different text " * 40, encoding="utf-8")
    assert cli("prepare", "--corpus", tmp_path / "c", "--out", other).exit_code == 0
    r = cli("eval", "--run", run, "--data", other)
    assert r.exit_code == 2 and "vocabulary" in r.output
    r = cli("train", "--data", other, "--out", run, "--resume", "--max-steps", 50)
    assert r.exit_code == 2 and "another vocabulary" in r.output
    best = json.loads((run / "checkpoints" / "best.json").read_text())["dir"]
    f = run / "checkpoints" / best / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    r = cli("predict", "--run", run, "abc")
    assert r.exit_code == 2 and "truncated or corrupt" in r.output and "Traceback" not in r.output


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "nextchar", "--help"], check=False, capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("prepare", "train", "eval", "predict", "params"):
        assert cmd in out.stdout
    for cmd in ("prepare", "train", "eval", "predict", "params"):
        r = cli(cmd, "--help")
        assert r.exit_code == 0 and "--" in r.output


def test_predict_without_run_uses_the_shipped_model(tmp_path):
    r = cli("predict", "Happy New Yea", "--threads", 1)
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3
    (tmp_path / "p.txt").write_text("Hello wor\nשלו\n", encoding="utf-8")
    r = cli("predict", "--input", tmp_path / "p.txt", "--output", tmp_path / "o.txt", "--threads", 1)
    assert r.exit_code == 0
    assert [len(x) for x in (tmp_path / "o.txt").read_text(encoding="utf-8").split("\n")] == [3, 3, 0]


def test_help_texts():
    from nextchar.engine.load import BACKENDS

    r = cli("train", "--help")
    assert "TOML file with [model] and [train] tables" in " ".join(r.output.replace("│", " ").split())
    for cmd in ("serve", "predict", "eval", "complete"):
        out = " ".join(cli(cmd, "--help").output.replace("│", " ").split())
        assert all(b in out for b in BACKENDS), cmd
    for cmd in ("predict", "complete"):
        out = " ".join(cli(cmd, "--help").output.replace("│", " ").split())
        assert "A prefix that starts with '-' goes after '--'" in out


def test_predict_json_for_one_prefix_and_the_unknown_warning(tiny_run):
    r = cli("predict", "--run", tiny_run, "--threads", 1, "--json", "-k", 2, "--", "-a\u2028b")
    assert r.exit_code == 0 and "\u2028" not in r.stdout and len(r.stdout.splitlines()) == 1
    rec = json.loads(r.stdout)
    assert rec["prefix"] == "-a\u2028b" and len(rec["chars"]) == len(rec["probs"]) == 2
    assert rec["unknown_share"] == 0.0 and rec["mostly_unknown"] is False and r.stderr == ""
    r = cli("predict", "--run", tiny_run, "--threads", 1, "日本語のテキスト")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3
    assert r.stderr.startswith("warning: 100% of the last 8 characters are outside the model's vocabulary")
    assert len(r.stderr.splitlines()) == 1
    r = cli("complete", "--run", tiny_run, "--threads", 1, "--json", "Hello wor")
    assert r.exit_code == 0 and json.loads(r.stdout)["prefix"] == "Hello wor"


@pytest.mark.parametrize("args,needle", [
    (("predict", "-k", 0, "abc"), "-k 0: must be at least 1"),
    (("predict", "-k", -2, "abc"), "-k -2: must be at least 1"),
    (("predict", "--threads", -1, "abc"), "--threads -1"),
    (("complete", "--beam", 0, "abc"), "--beam 0"),
    (("complete", "-k", 0, "abc"), "-k 0"),
    (("eval", "--positions", 0), "--positions 0: must be at least 1"),
    (("eval", "--positions", -5), "--positions -5"),
    (("eval", "--threads", -3), "--threads -3"),
    (("prepare", "--out", "{tmp}/d", "--min-count", 0), "--min-count 0: must be at least 1"),
    (("serve", "--threads", -1), "--threads -1"),
    (("mix", "--transformer", "{run}", "--ngram", "{run}", "--out", "{tmp}/m", "--positions", 0), "--positions 0"),
    (("export", "--run", "{run}", "--out", "{tmp}/e", "--eval-positions", -1), "--eval-positions -1"),
    (("train", "--data", "{tmp}", "--out", "{tmp}/r", "--model", "ngram", "--order", 13), "--order 13"),
])
def test_numeric_options_are_checked_before_any_work(args, needle, tiny_run, tmp_path):
    r = cli(*[str(a).format(tmp=tmp_path, run=tiny_run) for a in args] + (
        ["--run", str(tiny_run)] if args[0] == "eval" else []))
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"error: {r.output.strip().removeprefix('error: ')}"]
    assert needle in r.output and "Traceback" not in r.output


def test_eval_shows_its_progress(tiny_run, tiny_data_dir, tmp_path):
    r = cli("eval", "--run", tiny_run, "--data", tiny_data_dir, "--positions", 7, "--threads", 1, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "eval test" in r.stderr and "positions" in r.stderr and "ETA" in r.stderr
    res = json.loads((tmp_path / "eval_test.json").read_text())
    n = sum(v["n"] for v in res["languages"].values())
    assert f"{n}/{n}" in r.stderr


def test_counts_train_mix_and_streaming_eval(tiny_data_dir, tiny_run, tmp_path):
    """`nextchar train --model counts`, `nextchar mix --counts`, and `nextchar eval --stream` on the result."""
    counts, mix = tmp_path / "counts", tmp_path / "mix"
    r = cli("train", "--model", "counts", "--order", 4, "--data", tiny_data_dir, "--out", counts)
    assert r.exit_code == 0, r.output
    assert json.loads((counts / "config.json").read_text())["counts"]["order"] == 4
    r = cli("mix", "--transformer", tiny_run, "--counts", counts, "--out", mix, "--positions", 40, "--threads", 1)
    assert r.exit_code == 0, r.output
    assert "loglinear rule fitted on" in r.output
    r = cli("eval", "--run", mix, "--stream", "--chars", 60, "--threads", 1)
    assert r.exit_code == 0, r.output
    res = json.loads((mix / "eval_stream_test.json").read_text())
    assert res["mode"] == "stream" and res["chars"] == 60 and res["languages"]["en"]["n"] == 60
    assert "static (no adaptation)" in r.output
