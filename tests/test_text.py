"""The one normalization (nextchar.text): the training text's and the typed prefix's, and every surface reading
prefixes through it (CLI, file mode, --json, Python API, HTTP, completion, adaptation) on every backend."""

import json
import random
import re
import unicodedata

import numpy as np
import pytest
from typer.testing import CliRunner

from nextchar import engine, text
from nextchar.adapt import AdaptiveSession
from nextchar.cli import app
from nextchar.complete import complete
from nextchar.corpus import normalize
from nextchar.text import MAX_MARKS, clean, is_prefix_form, prefix_form

# raw prefix -> the text it stands for
TABLE = [
    ("", ""),
    ("Hello wor", "Hello wor"),
    ("J'aime le cafe\u0301", "J'aime le caf\u00e9"),  # NFD -> NFC
    (unicodedata.normalize("NFD", "Příliš žluťoučký ků"), "Příliš žluťoučký ků"),
    ("Hello\r\nwor", "Hello\nwor"),  # a typed Enter (any line ending) is a paragraph break
    ("Hello\rwor", "Hello\nwor"),
    ("Hello\x85wor\u2028x\u2029y", "Hello\nwor\nx\ny"),
    ("Hello\twor", "Hello wor"),  # whitespace runs -> one space
    ("Hello \t \u00a0\u202f\u3000 wor", "Hello wor"),
    ("a\x0bb\x0cc\x1fd", "a b c d"),  # whitespace controls are whitespace
    ("Hello ", "Hello "),  # a trailing space is kept (a word has ended)...
    ("Hello\t", "Hello "),  # ...and a trailing tab or run of spaces is one space
    ("Hello   ", "Hello "),
    ("Hello\r", "Hello\n"),  # a lone CR is a line ending: CR then LF changes nothing
    ("Hello\r\n", "Hello\n"),
    ("Hello \n\n  \r\n ", "Hello\n"),  # blank lines: one paragraph break, no space around it
    ("  Hello", "Hello"),  # a paragraph never starts with whitespace...
    ("\n\n\r\nHello", "Hello"),  # ...and the start of the text is a paragraph start
    ("a \n b", "a\nb"),
    ("\ufeffHello\ufeff wor", "Hello wor"),  # byte-order marks dropped anywhere
    ("it\x92s \x93ok\x94", "it\u2019s \u201cok\u201d"),  # C1 controls read as Windows-1252
    ("a\x00b\x07c\x7fd\x1be", "abcde"),  # other controls dropped
    ("\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae ", "\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae "),
    ("\ud800x", "\ud800x"),  # a lone surrogate stays (it is <unk>)
    ("\u200c\u200d\u00ad", "\u200c\u200d\u00ad"),  # format characters are text, not whitespace
]


def test_prefix_form_table():
    for raw, want in TABLE:
        assert prefix_form(raw) == want, repr(raw)
        assert prefix_form(want) == want  # idempotent


def doubled_breaks(s: str) -> str:
    """s with every line break written as a blank line (what a typed Enter means in a corpus file)."""
    return text.NEWLINES.sub("\n\n", s).replace("\n", "\n\n")


ALPHABET = list("ab Z.\t\n\r\x85\u2028\u2029\x0c\x07\x92\ufeff\u00a0\u0301\u0316e\u00e9\u09be\u0995") + ["\r\n"]


def test_a_prefix_is_what_prepare_makes_of_it_with_its_line_breaks_as_paragraphs():
    """prefix_form(s), less its trailing whitespace, is normalize() of s with every line break doubled; the trailing
    whitespace is one "\\n" when it holds a line break, else one space; and the fast path never disagrees."""
    rng = random.Random(7)
    for _ in range(3000):
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 14)))
        got = prefix_form(s)
        assert got.rstrip() == normalize(doubled_breaks(s).encode("utf-8"), "s"), repr(s)
        cleaned = clean(s)[0]
        tail = cleaned[len(cleaned.rstrip()):]
        if got.strip():
            assert got[len(got.rstrip()):] == ("" if not tail else "\n" if "\n" in tail else " "), repr(s)
        assert prefix_form(got) == got
        if is_prefix_form(s):
            assert text.SPACES.sub(text._space, clean(s)[0]).lstrip() == s, repr(s)


def test_whitespace_is_the_same_set_for_the_regex_and_str_split():
    assert all(bool(re.fullmatch(r"\s", chr(c))) == chr(c).isspace() for c in range(0x3100))


def test_runs_of_marks_are_capped_so_normalization_stays_linear():
    zalgo = "e" + "\u0301\u0316" * 200_000 + " x" + "\u0301" * 40  # NFC alone is quadratic in such a run
    got = prefix_form(zalgo)
    assert got == normalize(zalgo.encode("utf-8"), "zalgo")  # prepare caps alike
    head, tail = got.split(" ")
    assert len(head) == MAX_MARKS and unicodedata.normalize("NFD", head)[1:] == "\u0316" * 15 + "\u0301" * 15
    assert tail == "x" + "\u0301" * MAX_MARKS
    short = "e" + "\u0301" * MAX_MARKS
    assert prefix_form(short) == unicodedata.normalize("NFC", short)  # up to the cap: untouched
    assert text.is_mark("\u0f73") and not text.is_mark("a") and text.is_mark("\u09cd")


# ------------------------------------------------------------------------------------------ every surface

# Pairs a file line can hold (no line break), then pairs with line breaks for the other surfaces.
LINE_PAIRS = [
    ("Le vieux cha\u0302teau domina", "Le vieux château domina"),
    ("The\tquick  brown\u00a0fox ", "The quick brown fox "),
    ("\ufeff  Η Αθήνα\u2028είναι", "Η Αθήνα\nείναι"),  # U+2028 is not a line ending for a file, but a break
    ("it\x92s \x93ok", "it\u2019s \u201cok"),
    ("ঢাকা বাংলাদেশের\u00a0\t", "ঢাকা বাংলাদেশের "),
]
PAIRS = LINE_PAIRS + [("Москва\r\nстоли", "Москва\nстоли"), ("Hello\r", "Hello\n"), ("vall\u0065\u0301", "vall\u00e9")]
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_mixture(tiny_run, tiny_ngram_run, tiny_data_dir, tmp_path_factory):
    from nextchar.mix import make_mixture

    out = tmp_path_factory.mktemp("tiny_mix") / "mix"
    make_mixture(tiny_run, tiny_ngram_run, out, tiny_data_dir, 50)
    return out


@pytest.fixture(scope="module", params=["torch", "onnx", "ngram", "mixture", "counts"])
def folder(request, tiny_run, tiny_onnx, tiny_ngram_run):
    if request.param in ("mixture", "counts"):
        return request.getfixturevalue(f"tiny_{request.param}")
    return {"torch": tiny_run, "onnx": tiny_onnx, "ngram": tiny_ngram_run}[request.param]


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_every_surface_reads_a_prefix_as_its_normalized_form(folder, tmp_path):
    pred = engine.load(folder, threads=1)
    raws, norms = [r for r, _ in PAIRS], [n for _, n in PAIRS]
    want = pred.topk_batch(norms, 3)
    # Python API: single, batch, typing session (each the same computation for raw and normalized: exactly equal)
    assert [pred.topk(r, 3) for r in raws] == [pred.topk(n, 3) for n in norms] and pred.topk_batch(raws, 3) == want
    s, t = pred.session(), pred.session()
    assert [s.topk(r, 3) for r in raws] == [t.topk(n, 3) for n in norms]
    # CLI: a prefix argument, and --json
    for raw, norm in PAIRS[:3]:
        assert cli("predict", "--run", folder, "--threads", 1, "--", raw) == cli(
            "predict", "--run", folder, "--threads", 1, "--", norm)
        a = json.loads(cli("predict", "--run", folder, "--threads", 1, "--json", "--", raw))
        b = json.loads(cli("predict", "--run", folder, "--threads", 1, "--json", "--", norm))
        assert (a["prefix"], b["prefix"]) == (raw, norm) and a["chars"] == b["chars"] and a["probs"] == b["probs"]
    # file mode, text and JSON lines
    for name, lines in (("raw", [r for r, _ in LINE_PAIRS]), ("norm", [n.replace("\n", "\u2028") for _, n in LINE_PAIRS])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        cli("predict", "--run", folder, "--threads", 1, "--input", tmp_path / f"{name}.txt", "--output",
            tmp_path / f"{name}.out")
        cli("predict", "--run", folder, "--threads", 1, "--json", "--input", tmp_path / f"{name}.txt", "--output",
            tmp_path / f"{name}.jsonl")
    assert (tmp_path / "raw.out").read_text("utf-8") == (tmp_path / "norm.out").read_text("utf-8")
    assert (tmp_path / "raw.out").read_text("utf-8").splitlines() == ["".join(c for c, _ in w) for w in
                                                                      want[:len(LINE_PAIRS)]]
    rows = [[json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text("utf-8").splitlines()] for n in ("raw", "norm")]
    assert len(rows[0]) == len(LINE_PAIRS) and [r["chars"] for r in rows[0]] == [r["chars"] for r in rows[1]]
    # word completion
    for raw, norm in PAIRS:
        assert complete(pred, raw, 3) == complete(pred, norm, 3), raw
    # adaptation: the remembered text and the prefix
    a, b = AdaptiveSession(pred), AdaptiveSession(pred)
    a.observe("Le vieux cha\u0302teau\r\ndomina la valle\u0301e  \t")
    b.observe("Le vieux château\ndomina la vallée")
    assert a.history_chars == b.history_chars
    np.testing.assert_array_equal(a.cache_ids(raws[0]), b.cache_ids(norms[0]))
    assert a.topk_batch(raws, 3) == b.topk_batch(norms, 3)


def test_every_http_surface_reads_a_prefix_as_its_normalized_form(folder):
    from fastapi.testclient import TestClient

    from nextchar.serve import create_app

    raws, norms = [r for r, _ in PAIRS], [n for _, n in PAIRS]
    with TestClient(create_app(folder, threads=1)) as client:
        def post(path, **body):
            r = client.post(path, json=body)
            assert r.status_code == 200, r.text
            return r.json()

        for raw, norm in PAIRS:
            a, b = post("/v1/predict", prefix=raw), post("/v1/predict", prefix=norm)
            assert a == b and a["unknown_share"] < 0.5 and a["mostly_unknown"] is False
            assert post("/v1/complete", prefix=raw) == post("/v1/complete", prefix=norm)
        assert post("/v1/predict/batch", prefixes=raws) == post("/v1/predict/batch", prefixes=norms)
        for sid, t in (("raw", "Le vieux cha\u0302teau\r\ndomina la valle\u0301e"), ("norm", "Le vieux château\ndomina la vallée")):
            post("/v1/session/observe", session=sid, text=t)
        assert post("/v1/predict/batch", prefixes=raws, session="raw")["predictions"] == post(
            "/v1/predict/batch", prefixes=norms, session="norm")["predictions"]
        for raw, norm in PAIRS[:3]:
            assert post("/v1/predict", prefix=raw, session="raw")["predictions"] == post(
                "/v1/predict", prefix=norm, session="norm")["predictions"]
        ja = post("/v1/predict", prefix="日本語のテキスト")
        assert ja["unknown_share"] == 1.0 and ja["mostly_unknown"] is True
        batch = post("/v1/predict/batch", prefixes=["Hello", "日本語のテキスト"])
        assert batch["mostly_unknown"] == [False, True] and len(batch["unknown_share"]) == 2


# ------------------------------------------------------------------------------------------ the shipped model

# EXPECTED VALUES OF THE SHIPPED DEFAULT MODEL (src/nextchar/models/default). Update this table, and only this
# table, when the default model is replaced: each prefix's top-3 characters, and its top probability where the
# issue gave one. The rules below it (raw == normalized, no mark that cannot attach, unknown scripts flagged)
# hold for any model.
DEFAULT_TOP3 = {
    "J'aime le caf\u00e9": ([" ", ",", "."], 0.896),
    "Příliš žluťoučký ků": (["ž", " ", "."], None),
    "Hello wor": (["d", "k", "l"], None),
    "\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae ": (["\u09b8", "\u09aa", "\u0995"], None),
}
# raw as people type it -> its key in DEFAULT_TOP3 (or another prefix that must answer alike)
DEFAULT_RAW = [
    ("J'aime le cafe\u0301", "J'aime le caf\u00e9"),
    (unicodedata.normalize("NFD", "Příliš žluťoučký ků"), "Příliš žluťoučký ků"),
    ("Hello\twor", "Hello wor"),
    ("Hello \u00a0wor", "Hello wor"),
    ("\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae\t", "\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae "),
    ("Hello\r\nwor", "Hello\nwor"),
    ("Hello\r", "Hello\r\n"),
]


@pytest.fixture(scope="module")
def default():
    return engine.load("default", threads=1)


def test_the_issue_examples_on_the_shipped_model(default):
    for raw, norm in DEFAULT_RAW:
        assert default.topk(raw, 3) == default.topk(norm, 3), repr(raw)
    for prefix, (top3, p1) in DEFAULT_TOP3.items():
        got = default.topk(prefix, 3)
        assert [c for c, _ in got] == top3, prefix
        if p1 is not None:
            assert got[0][1] == pytest.approx(p1, abs=5e-4)


def test_no_mark_that_cannot_attach_on_the_shipped_model(default):
    marks = {c for c in default.vocab.chars[1:] if unicodedata.category(c) in ("Mn", "Mc", "Me")}
    for prefix in ["\u0130S", "", "\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae ", "Hello", "12", "\u05e9\u05dc\u05d5\u05dd,",
                   "\u0645\u0631\u062d\u0628\u0627 ", "\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae."]:
        assert not {c for c, _ in default.topk(prefix, default.vocab.size)} & marks, prefix
    assert {c for c, _ in default.topk("\u0986\u09ae", default.vocab.size)} & marks  # after a Bengali letter


def test_unknown_scripts_are_flagged_on_the_shipped_model(default):
    for prefix in ["日本語のテキストです", "你好，世界", "नमस्ते दुनिया"]:
        assert default.unknown_share(prefix) >= 0.5, prefix
    for prefix in ["Hello wor", "Příliš žluťoučký ků", "\u0986\u09ae\u09be\u09b0 \u09a8\u09be\u09ae "]:
        assert default.unknown_share(prefix) == 0.0, prefix
