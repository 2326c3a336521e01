"""engine.load: dispatch on the folder's own description, names, one-line errors, and no torch where none is needed."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from nextchar import engine
from nextchar.engine.folder import data_dir, describe
from nextchar.engine.mixture_backend import MixturePredictor
from nextchar.engine.ngram_backend import NGramPredictor
from nextchar.engine.onnx_backend import OnnxPredictor
from nextchar.engine.torch_backend import TorchPredictor
from nextchar.errors import UserError


def test_each_kind_of_folder_loads_its_backend(tiny_run, tiny_onnx, tiny_ngram_run, tmp_path):
    assert isinstance(engine.load(tiny_run), TorchPredictor)
    assert isinstance(engine.load(tiny_onnx), OnnxPredictor)
    assert isinstance(engine.load(tiny_ngram_run), NGramPredictor)
    mix = tmp_path / "mix"
    mix.mkdir()
    shutil.copy(tiny_run / "vocab.json", mix)
    (mix / "config.json").write_text(json.dumps({"model_type": "mixture", "weight": 0.25,
                                                 "components": [str(tiny_run), str(tiny_ngram_run)]}))
    m = engine.load(mix)
    assert isinstance(m, MixturePredictor) and m.weight == 0.25 and m.run_id == "mix"
    assert describe(mix).kind == "mixture" and describe(tiny_onnx).kind == "onnx"


def test_errors_are_one_line_user_errors(tiny_run, tiny_onnx, tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        engine.load(tiny_run, backend="tensorflow")
    with pytest.raises(UserError, match="not an export folder"):
        engine.load(tiny_run, backend="onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an export folder"):
        engine.load(tmp_path / "empty", backend="onnx")
    with pytest.raises(UserError, match="no config.json"):
        engine.load(tmp_path / "empty")
    with pytest.raises(UserError, match=r"not found \(nor a shipped model name: .*default"):
        engine.load(tmp_path / "nope")
    with pytest.raises(UserError, match="not found"):
        engine.load("no-such-model")
    with pytest.raises(UserError, match="on the CPU"):
        engine.load(tiny_onnx, device="cuda")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "lstm"}))
    with pytest.raises(UserError, match="unknown kind of model"):
        engine.load(tmp_path / "odd")
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "config.json").write_text(json.dumps({"model_type": "mixture", "weight": 0.5,
                                                             "components": ["a", "b"]}))
    with pytest.raises(UserError, match="mixture component a not found"):
        engine.load(tmp_path / "mix")


def test_the_data_path_is_a_hint(tiny_run, tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "data" must not be found in the folder the tests run from
    run = tmp_path / "elsewhere" / "run"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    assert data_dir(describe(run)) == tiny_data_dir.resolve()  # stored absolute: found as it is
    cfg["data"] = "data"
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"its training data \(data\) is not here; pass --data"):
        data_dir(describe(run))
    shutil.copytree(tiny_data_dir, tmp_path / "elsewhere" / "data")  # next to the run folder
    assert data_dir(describe(run)) == tmp_path / "elsewhere" / "data"
    assert data_dir(describe(run), "given") == type(run)("given")


BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        # the install without the [train] extra: torch and safetensors cannot be imported
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "safetensors"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoTorch())
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True,
                          text=True, encoding="utf-8")


def test_onnx_and_ngram_predict_without_torch(tiny_onnx, tiny_ngram_run, tiny_run, tmp_path):
    mix = tmp_path / "mix"
    mix.mkdir()
    shutil.copy(tiny_run / "vocab.json", mix)
    (mix / "config.json").write_text(json.dumps({"model_type": "mixture", "weight": 0.5,
                                                 "components": [str(tiny_onnx), str(tiny_ngram_run)]}))
    out = run_without_torch(f"""
        from nextchar import engine
        from nextchar.predict import predict_file
        for folder in {[str(tiny_onnx), str(tiny_ngram_run), str(mix)]!r}:
            p = engine.load(folder)
            assert len(p.topk("Hello wor", 3)) == 3
            s = p.session()
            for n in range(12):
                s.topk("Hello world"[:n])
        assert "torch" not in sys.modules and "nextchar.engine.torch_backend" not in sys.modules
        try:
            engine.load({str(tiny_run)!r})
        except engine.base.UserError as e:
            print(e)
    """)
    assert out.returncode == 0, out.stderr
    assert "a PyTorch run needs torch (pip install 'nextchar[train]')" in out.stdout


def test_cli_predict_and_eval_without_torch(tiny_onnx, tiny_ngram_run, tiny_data_dir, tmp_path):
    (tmp_path / "in.txt").write_text("Hello wor\nПри\n", encoding="utf-8")
    out = run_without_torch(f"""
        from nextchar.cli import main
        for args in (["predict", "--run", {str(tiny_onnx)!r}, "Hello wor", "--threads", "1"],
                     ["predict", "--model", {str(tiny_ngram_run)!r}, "--input", {str(tmp_path / "in.txt")!r},
                      "--output", {str(tmp_path / "out.txt")!r}],
                     ["eval", "--run", {str(tiny_onnx)!r}, "--data", {str(tiny_data_dir)!r}, "--positions", "20",
                      "--out", {str(tmp_path)!r}, "--threads", "1"]):
            sys.argv = ["nextchar", *args]
            try:
                main()
            except SystemExit as e:
                assert e.code in (0, None), (args, e.code)
        assert "torch" not in sys.modules
    """)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()[0].split("\t")) == 2
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").count("\n") == 2
    assert json.loads((tmp_path / "eval_test.json").read_text())["positions"] == 20
