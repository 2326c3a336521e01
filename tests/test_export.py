"""ONNX export: a self-contained folder, parity with PyTorch (batch and typing), int8, errors, the CLI."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nextchar import engine
from nextchar.cli import app
from nextchar.config import load
from nextchar.data import open_data
from nextchar.engine.onnx_backend import OnnxPredictor, cache_names
from nextchar.errors import UserError
from nextchar.export import dev_prefixes, export, format_summary, write_graphs
from nextchar.model import CharTransformer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    res = export(tiny_run, out, int8=True, positions=20, parity_prefixes=200)
    return out, res


@pytest.fixture(scope="module")
def torch_pred(tiny_run):
    return engine.load(tiny_run)


def test_folder_is_self_contained_and_detected(exported, tmp_path):
    out, _ = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["config.json", "vocab.json", "weights.bin", *(f"{g}{q}.onnx" for g in ("model", "step", "key")
                                                                         for q in ("", ".int8"))])
    # the graphs share one copy of their weights: each large tensor points at the same bytes of weights.bin
    import onnx

    def places(graph):
        return {t.name: (e["location"], e["offset"]) for t in onnx.load(str(out / graph), load_external_data=False
                                                                       ).graph.initializer
                if (e := {x.key: x.value for x in t.external_data})}

    model, step, key = places("model.onnx"), places("step.onnx"), places("key.onnx")
    assert model["model.tok.weight"] == step["model.tok.weight"] == key["model.tok.weight"]
    assert model["model.tok.weight"][0] == "weights.bin"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["export"]["format"] == "onnx" and cfg["model"]["n_layers"] == 2 and cfg["source"]["run"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    pred = engine.load(moved)  # no backend named: an export folder is recognized
    assert isinstance(pred, OnnxPredictor) and not pred.int8 and pred.incremental
    assert isinstance(engine.load(moved, backend="onnx-int8"), OnnxPredictor)
    assert len(pred.topk("Hello wor", 3)) == 3


def test_fp32_top3_equals_pytorch_on_1000_dev_prefixes(exported, torch_pred, tiny_data_dir):
    out, _ = exported
    onnx = engine.load(out, backend="onnx")
    prefixes = dev_prefixes(open_data(tiny_data_dir), 1000)
    assert len(set(prefixes)) > 900 and max(map(len, prefixes)) > onnx.context
    want, got = torch_pred.topk_batch(prefixes, 3), onnx.topk_batch(prefixes, 3)
    assert [[c for c, _ in r] for r in got] == [[c for c, _ in r] for r in want]
    np.testing.assert_allclose([[p for _, p in r] for r in got], [[p for _, p in r] for r in want], atol=1e-5)
    np.testing.assert_allclose(onnx.dist(prefixes[:50]), torch_pred.dist(prefixes[:50]), atol=1e-5)


def test_onnx_typing_session_matches_pytorch_and_its_window(exported, torch_pred):
    out, _ = exported
    onnx = engine.load(out)
    text = "Привет, мир! The quick brown fox jumps over the lazy dog. שלום עולם " * 2
    a, b = torch_pred.session(onnx.context // 2), onnx.session(onnx.context // 2)
    prefix = ""
    for i, ch in enumerate(text):
        prefix = prefix[:-1] if i % 13 == 12 else prefix + ch
        lp = b.logprobs(prefix)
        np.testing.assert_allclose(lp, a.logprobs(prefix), atol=1e-4)
        np.testing.assert_allclose(lp, b.pred.logprobs([onnx.encode(prefix)])[0], atol=1e-4)
    assert b.recomputes < len(text) // 4


def test_int8_change_is_measured_and_printed(exported):
    _, res = exported
    acc = res["int8"]["accuracy"]
    assert "skipped" not in acc and set(acc["micro_top3"]) == {"fp32", "int8", "delta"}
    assert res["int8"]["parity"]["n"] == 200 and res["parity"]["max_abs_dp"] < 1e-4
    text = format_summary(res)
    assert "int8 dev micro top3" in text and "parity fp32 vs PyTorch on 200 prefixes" in text


def test_int8_measurement_skipped_without_the_data(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(cfg))
    res = export(run, tmp_path / "out", int8=True, parity_prefixes=20)
    assert "not found" in res["int8"]["accuracy"]["skipped"]
    assert "int8 accuracy change not measured" in format_summary(res)
    res = export(run, tmp_path / "out", parity_prefixes=20)  # an earlier export is replaced
    assert "int8" not in res and not (tmp_path / "out" / "model.int8.onnx").exists()


@pytest.mark.parametrize("preset,pos,buckets", [("seed-2l", "learned", 0), ("modern-2l", "rope", 0),
                                                 ("modern-2l", "learned", 0), ("modern-2l", "rope", 53)])
def test_graphs_match_the_model_for_every_variant(preset, pos, buckets, tmp_path):
    """Both graphs follow any batch, sequence and past length, not only the ones they were traced with."""
    import onnxruntime as ort

    cfg = load(preset).model
    cfg.vocab_size, cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.context, cfg.pos = 40, 2, 32, 64, 24, pos
    cfg.ngram_buckets = buckets  # hashed 2..4-gram inputs: the step graphs also take `prev`
    torch.manual_seed(0)
    model = CharTransformer(cfg).eval()
    if buckets:
        torch.nn.init.normal_(model.ngram.weight)  # zero at init; random rows make `prev` matter
    write_graphs(model, tmp_path)
    full = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 40, (3, 24))
    with torch.no_grad():
        want = torch.log_softmax(model(x)[0], dim=-1)  # (3, 24, 40)
    rows, cols = np.array([0, 2, 2, 1]), np.array([23, 0, 11, 5])
    got = full.run(None, {"ids": x.numpy(), "rows": rows, "cols": cols})[0]
    np.testing.assert_allclose(got, want[rows, cols].numpy(), atol=1e-5)
    key = ort.InferenceSession(str(tmp_path / "key.onnx"), providers=["CPUExecutionProvider"])
    names = cache_names(2, "past")
    for graph, steps in ((step, (1, 5, 1, 1, 9, 7)), (key, (1,) * 24), (step, (24,))):
        past, at = [np.zeros((1, cfg.n_heads, 0, 32 // cfg.n_heads), np.float32)] * 4, 0
        for t in steps:
            feeds = {"ids": x[:1, at:at + t].numpy(), **dict(zip(names, past))}
            if buckets:
                feeds["prev"] = torch.nn.functional.pad(x[:1, :at], (3, 0), value=40)[:, -3:].numpy()
            lp, *past = graph.run(None, feeds)
            at += t
            np.testing.assert_allclose(lp[0], want[0, at - 1].numpy(), atol=1e-5)


def test_errors_are_one_line_user_errors(exported, tiny_run, tmp_path):
    out, _ = exported
    with pytest.raises(UserError, match="unknown export format"):
        export(tiny_run, tmp_path / "x", fmt="tflite")
    with pytest.raises(UserError, match="not found"):
        export(tmp_path / "missing", tmp_path / "x")
    with pytest.raises(UserError, match="is an export folder"):
        export(out, tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing to overwrite"):
        export(tiny_run, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({"export": {"format": "onnx", "files": {}}}))
    with pytest.raises(UserError, match="not an ONNX export"):
        engine.load(tmp_path / "half")
    with pytest.raises(UserError, match="on the CPU"):
        engine.load(out, device="cuda")
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.tmp").exists()


def test_cli_export(tiny_run, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--run", str(tiny_run), "--out", str(tmp_path / "o"), "--format", "tflite"])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "unknown export format" in res.output
    res = runner.invoke(app, ["export", "--run", str(tiny_run), "--out", str(tmp_path / "o"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "parity fp32 vs PyTorch" in res.output and (tmp_path / "o" / "model.onnx").exists()


def test_hashed_ngram_model_exports_with_typing_parity(tiny_hash_run, tmp_path):
    """export() checks batch and typing parity itself (it raises on a miss); a session agrees with PyTorch's."""
    out = tmp_path / "hash-onnx"
    res = export(tiny_hash_run, out, parity_prefixes=100)
    assert res["parity"]["n"] == 100 and res["parity"]["max_abs_dp"] < 1e-4
    onnx, ref = OnnxPredictor(out), engine.load(tiny_hash_run)
    assert onnx.incremental
    text = "Le vieux château dominait la vallée, et les enfants couraient vers la rivière en riant."
    s_onnx, s_ref = onnx.session(), ref.session()
    for n in range(len(text) + 1):
        np.testing.assert_allclose(s_onnx.dist(text[:n]), s_ref.dist(text[:n]), atol=1e-5)


def test_weights_exact_in_float16_are_stored_as_float16(tiny_run, tmp_path):
    """Weights packaged with --half are exact in float16: the export stores them so, with the same predictions."""
    from nextchar.evaluate import eval_run
    from nextchar.package import package_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    eval_run(run, "test", positions=20)
    half = package_model(run, tmp_path / "half", half=True)
    a = export(half, tmp_path / "a", parity_prefixes=50)  # parity against the half weights: raises on a miss
    b = export(run, tmp_path / "b", parity_prefixes=50)
    assert a["parity"]["max_abs_dp"] < 1e-4 and a["parity"]["typing_max_abs_dp"] < 1e-4
    assert 0.4 < a["export"]["weights_bytes"] / b["export"]["weights_bytes"] < 0.75
    assert [c for c, _ in engine.load(tmp_path / "a").topk("Hello wor", 3)] == [
        c for c, _ in engine.load(half, backend="torch").topk("Hello wor", 3)]
