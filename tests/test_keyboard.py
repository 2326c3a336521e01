"""The keyboard's keys: scripts from Unicode names, frequency order from the model's own chain, GET /v1/keys."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nextchar.adapt import MAX_TEXT
from nextchar.engine import Predictor
from nextchar.keyboard import layout, run_languages, script_of
from nextchar.serve import MAX_BODY, create_app
from nextchar.vocab import Vocab

CHARS = ["<unk>", "\n", " ", ",", ".", "1", "2", "A", "B", "a", "b", "c", "d", "é", "α", "β", "γ", "\ufe0f"]
# p(next) given the script of the last letter before the position (Latin when none): a language model whose
# letter frequencies are known exactly, so the estimated order can be checked against them.
LATIN = {"a": 0.30, "b": 0.20, "c": 0.15, "d": 0.10, "é": 0.002, " ": 0.18, ".": 0.03, ",": 0.01, "A": 0.01,
         "B": 0.005, "1": 0.004, "2": 0.008, "\ufe0f": 0.011}
GREEK = {"α": 0.10, "β": 0.45, "γ": 0.20, " ": 0.20, ",": 0.04, ".": 0.01}


class LetterMemory(Predictor):
    """Next-character distributions that depend only on the script of the last letter of the context."""

    def __init__(self) -> None:
        super().__init__(Vocab(CHARS), 16, "letter-memory")
        self.rows = {}
        for name, table in (("Latin", LATIN), ("Greek", GREEK)):
            row = np.full(len(CHARS), 1e-9)  # (V,)
            for c, p in table.items():
                row[CHARS.index(c)] = p
            self.rows[name] = np.log(row / row.sum())

    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        out = []
        for ids in contexts:
            letters = [script_of(CHARS[i]) for i in ids if i > 0 and script_of(CHARS[i])]
            out.append(self.rows["Greek" if letters and letters[-1] == "Greek" else "Latin"])
        return np.stack(out)  # (N, V)


def test_script_of_names_the_unicode_script():
    assert [script_of(c) for c in "aé\u0130Ωжשبবক中"] == [
        "Latin", "Latin", "Latin", "Greek", "Cyrillic", "Hebrew", "Arabic", "Bengali", "Bengali", "Han"]
    assert script_of("\u09be") == "Bengali"  # a vowel sign (a spacing mark) belongs to its script
    assert [script_of(c) for c in " .,1\u0301\u200c€"] == [None] * 7  # symbols, combining accents, joiners


def test_frequency_order_is_the_models_own():
    keys = {k.script: k for k in layout(LetterMemory())}
    assert list(keys) == ["Latin", "Greek"]  # more letters first
    latin, greek = keys["Latin"], keys["Greek"]
    assert latin.letters == ["a", "b", "c", "d"]  # by probability; "A" and "B" are Shift + a, b
    assert latin.more == ["é"]  # an accented letter this rare (0.3% of the letters) waits on the "more" pane
    assert greek.letters == ["β", "γ", "α"] and greek.more == []
    # symbols: digits in numeric order first, then by how often they follow the script's letters
    assert latin.symbols == ["1", "2", ".", "\ufe0f", ","]
    assert latin.punctuation == [".", ","]  # no variation selector on the main pane
    assert greek.punctuation == [",", "."]


def test_keys_route_on_a_trained_model(tiny_run):
    with TestClient(create_app(tiny_run)) as c:
        r = c.get("/v1/keys")
        assert r.status_code == 200, r.text
        body = r.json()
        assert c.get("/v1/keys").json() == body  # computed once, the same every time
    assert body["max_text"] == MAX_TEXT and body["max_body"] == MAX_BODY
    assert body["languages"] == run_languages(tiny_run) != []
    vocab = Vocab.load(tiny_run / "vocab.json")
    scripts = {k["script"]: k for k in body["scripts"]}
    assert {"Latin", "Greek", "Cyrillic", "Hebrew", "Arabic", "Bengali", "Han"} <= set(scripts)
    seen = set()
    for k in body["scripts"]:
        keys = k["letters"] + k["more"]
        assert len(keys) == len(set(keys)) and not seen & set(keys)  # each letter once, in one script
        seen |= set(keys)
        assert all(c in vocab.stoi and script_of(c) == k["script"] for c in keys)
        assert not any(c != c.lower() and c.lower() in vocab.stoi for c in keys)  # no capital with a key
        assert set(k["punctuation"]) <= set(k["symbols"]) and not set(k["symbols"]) & seen
        assert " " not in k["symbols"] and "\n" not in k["symbols"]
    assert all("\u05d0" <= c <= "\u05ea" for c in scripts["Hebrew"]["letters"])


@pytest.mark.parametrize("cfg", ['{"languages": ["en", "he"]}', '{"export": {"languages": ["fr"]}}', "[]", "{"])
def test_run_languages(tmp_path, cfg):
    (tmp_path / "config.json").write_text(cfg, encoding="utf-8")
    want = {'{"languages": ["en", "he"]}': ["en", "he"], '{"export": {"languages": ["fr"]}}': ["fr"]}
    assert run_languages(tmp_path) == want.get(cfg, [])
    assert run_languages(tmp_path / "missing") == []
