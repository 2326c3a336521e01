"""Every rule of prediction, run against every backend (a new backend added to BACKENDS gets them all).

Rules: an empty prefix is valid; a long prefix is read through the backend's window; a prefix is read as the
training text was (nextchar.text.prefix_form); unknown characters are <unk>; specials and control characters are
never suggested, a mark only where it can attach; the k suggestions are distinct and sorted; distributions sum to
one; a batch answers as single calls do; the public incremental interface (start / feed / truncate) and a typing
session give what topk gives for the whole prefix after every keystroke, backspaces, edits and normalization's own
edits (a mark composing with its base, CR then LF) included; bad arguments are UserErrors naming them.
"""

import unicodedata

import numpy as np
import pytest

from nextchar import engine
from nextchar.adapt import AdaptiveSession
from nextchar.engine.base import MARKS, MOSTLY_UNKNOWN, NEVER_SUGGESTED, START
from nextchar.engine.mixture_backend import MixturePredictor, Rule
from nextchar.errors import UserError
from nextchar.text import prefix_form

BACKENDS = ["torch", "torch-hashed", "torch-stride", "onnx", "onnx-stride", "ngram", "mixture", "mixture-stride",
            "counts", "combined-loglinear", "combined-cells"]
CELLS = (("a_max", (0.2, 0.5)), ("b_max", (0.3, 0.6)))
# a log-linear rule with other coefficients in each of the 9 cells (one of them drops the linear input)
LOGLINEAR = Rule("loglinear", 0.3, CELLS, coef=tuple((0.2 + 0.1 * i, 0.9 - 0.05 * i, 0.5 if i != 4 else 0.0)
                                                     for i in range(9)))
CELL_WEIGHTS = Rule("linear", 0.3, CELLS, weights=(0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.9, 1.0))
TEXT = ("Le vieux château dominait la vallée. The quick brown fox jumps over the lazy dog; "
        "Москва — столица России. Η Αθήνα είναι η πρωτεύουσα. 北京是中国的首都。") * 2


@pytest.fixture(scope="module", params=BACKENDS)
def pred(request, tiny_run, tiny_hash_run, tiny_onnx, tiny_ngram_run, tiny_counts):
    name = request.param
    if name == "counts":
        return engine.load(tiny_counts)  # dispatched on its config.json
    stride = 7 if name.endswith("-stride") else 1  # a window that jumps: KV caches are reused while typing
    if name.startswith("torch"):
        return engine.load(tiny_hash_run if name == "torch-hashed" else tiny_run, backend="torch", stride=stride)
    if name.startswith("onnx"):
        return engine.load(tiny_onnx, stride=stride)
    if name == "ngram":
        return engine.load(tiny_ngram_run)
    if name.startswith("combined"):
        # the Transformer (ONNX, its key/value cache) and the count model (its O(1) typing state), a fitted-like rule
        rule = LOGLINEAR if name.endswith("loglinear") else CELL_WEIGHTS
        return MixturePredictor(engine.load(tiny_onnx, stride=7), engine.load(tiny_counts), rule, "combined")
    # A Transformer (context 32) and an n-gram (context 3): parts with different windows.
    return MixturePredictor(engine.load(tiny_run, stride=stride), engine.load(tiny_ngram_run), 0.4, "mix")


def chars(rows):
    return [[c for c, _ in r] for r in rows]


def probs(rows):
    return [[p for _, p in r] for r in rows]


def typed(text, every=(11, 29)):
    """The prefixes of a user typing text with a backspace every 11th key and an edit every 29th."""
    prefix, out = "", []
    for i, ch in enumerate(text):
        if i % every[0] == every[0] - 1:
            prefix = prefix[:-1]
        elif i % every[1] == every[1] - 1 and len(prefix) > 10:
            prefix = prefix[:-9] + "X" + prefix[-8:]  # a correction 9 characters back
        else:
            prefix += ch
        out.append(prefix)
    return out


def test_topk_is_k_distinct_suggestible_characters_sorted(pred):
    for prefix in ["Hello wor", "", "Привет", "\U0001D11E", "a\tb\n"]:
        out = pred.topk(prefix, 10)
        cs, ps = [c for c, _ in out], [p for _, p in out]
        assert len(out) == 10 and len(set(cs)) == 10 and ps == sorted(ps, reverse=True)
        assert all(0 < p <= 1 for p in ps)
        for c in cs:
            assert len(c) == 1 and c != START and unicodedata.category(c) not in NEVER_SUGGESTED
            assert not pred.vocab.is_special(pred.vocab.stoi[c])


def test_k_is_capped_at_the_suggestible_characters(pred):
    out = pred.topk("a", 10_000)
    assert len(out) == int(pred.suggestible_after([pred.encode("a")]).sum()) and len({c for c, _ in out}) == len(out)
    assert len(out) < int(pred.suggestible().sum())  # the Bengali signs cannot follow a Latin letter


def test_distributions_sum_to_one(pred):
    d = pred.dist(["", "Привет", "שלום עול", "x" * 500, "\U0001D11E" * 3])
    assert d.shape == (5, pred.vocab.size)
    np.testing.assert_allclose(d.sum(axis=1), 1.0, rtol=1e-5)
    lp = pred.logprobs([pred.encode("abc"), np.zeros(0, dtype=np.int64)])
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-5)


def test_empty_prefix_is_the_paragraph_start(pred):
    assert len(pred.topk("", 3)) == 3
    np.testing.assert_allclose(pred.dist([""])[0], np.exp(pred.logprobs([np.zeros(0, dtype=np.int64)])[0]),
                               rtol=1e-6)


def test_long_prefix_is_read_through_the_window(pred):
    """A prefix far past the context depends only on its last `context` characters (at the same position)."""
    tail = TEXT[:pred.context]
    a, b = "a" * 10 * pred.context + tail, "b" * 10 * pred.context + tail
    assert chars([pred.topk(a, 5)]) == chars([pred.topk(b, 5)])
    np.testing.assert_allclose(pred.dist([a]), pred.dist([b]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(pred.dist([tail]), pred.dist([tail[:-2] + "zz"]))  # ...and does read them


def test_unknown_characters_are_unk(pred):
    ids = pred.encode("ab\U0001D11E\U0001F9FF")
    assert ids.tolist()[-2:] == [0, 0] and pred.vocab.chars[0] == "<unk>"
    np.testing.assert_allclose(pred.dist(["ab\U0001D11E"]), pred.dist(["ab\U0001F9FF"]), rtol=1e-6)
    assert "<unk>" not in chars([pred.topk("\U0001D11E\U0001D11E", 20)])[0]


def test_batch_equals_single(pred):
    prefixes = [TEXT[:n] for n in range(0, 2 * pred.context + 5, 3)] + ["zz", "", TEXT[:5], "x" * 300]
    batch = pred.topk_batch(prefixes, 3, batch_size=7)
    single = [pred.topk(p, 3) for p in prefixes]
    assert chars(batch) == chars(single)
    np.testing.assert_allclose(probs(batch), probs(single), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.dist(prefixes), pred.dist(prefixes[::-1])[::-1], rtol=1e-4, atol=1e-7)


def test_session_equals_topk_after_every_keystroke(pred):
    s = pred.session()
    prefixes = typed(TEXT[: 3 * pred.context + 20]) + ["", "Le", "Le", TEXT[:40] + "Q" + TEXT[41:90]]
    batch = pred.topk_batch(prefixes, 3)
    for p, want in zip(prefixes, batch):
        got = s.topk(p, 3)
        assert chars([got]) == chars([want]), p
        np.testing.assert_allclose(probs([got]), probs([want]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s.dist(prefixes[-1]), pred.dist(prefixes[-1:])[0], rtol=1e-4, atol=1e-6)


def test_feed_and_truncate_are_the_whole_history(pred):
    ids = pred.encode(TEXT[: 2 * pred.context + 9])
    want = pred.logprobs([ids, ids[:17], np.zeros(0, dtype=np.int64)])  # (3, V)
    s0 = pred.start()
    state, lp = pred.feed(s0, ids[:5])
    for i in range(5, len(ids), 6):
        state, lp = pred.feed(state, ids[i:i + 6])
    np.testing.assert_allclose(lp, want[0], atol=2e-5)
    cut, lp17 = pred.feed(pred.truncate(state, 17), ids[17:17])  # nothing more to read: the cut's distribution
    np.testing.assert_allclose(lp17, want[1], atol=2e-5)
    np.testing.assert_allclose(pred.feed(cut, ids[17:])[1], want[0], atol=2e-5)
    np.testing.assert_allclose(pred.feed(s0, ids[:0])[1], want[2], atol=2e-5)
    np.testing.assert_allclose(pred.feed(state, ids[:0])[1], want[0], atol=2e-5)  # state was never changed


def test_a_window_stride_is_a_view_sharing_the_model(pred):
    other = pred.windowed(3)
    assert other.vocab is pred.vocab and pred.stride in (1, 7)
    prefix = TEXT[: 2 * pred.context]
    np.testing.assert_allclose(other.session().dist(prefix), other.dist([prefix])[0], rtol=1e-4, atol=1e-6)


# raw prefix -> what it stands for; test_text.py runs the same kinds through every surface
PAIRS = [
    ("Le vieux cha\u0302teau domina", "Le vieux château domina"),  # NFD
    ("valle\u0301e.\r\nThe quick", "vallée.\nThe quick"),  # NFD + CRLF
    ("The\tquick  brown\u00a0fox ", "The quick brown fox "),  # tab, space run, no-break space, trailing space
    ("Москва\r", "Москва\n"),  # a lone CR is a line ending
    ("\ufeff  Η Αθήνα\u2028είναι", "Η Αθήνα\nείναι"),  # BOM, leading spaces, line separator
    ("it\x92s a\x00b", "it\u2019s ab"),  # a C1 control read as Windows-1252, a NUL dropped
    ("ঢাকা বাংলাদেশের\u00a0\t", "ঢাকা বাংলাদেশের "),  # trailing whitespace run
    ("\n\n \n", ""),  # only whitespace: the start of a paragraph
]


def test_a_prefix_is_read_as_the_training_text_was(pred):
    raws, norms = [r for r, _ in PAIRS], [n for _, n in PAIRS]
    assert [prefix_form(r) for r in raws] == norms
    np.testing.assert_array_equal(pred.dist(raws), pred.dist(norms))  # the same ids: exactly the same
    assert pred.topk_batch(raws, 5) == pred.topk_batch(norms, 5)
    s = pred.session()
    for r, n in PAIRS:
        assert chars([s.topk(r, 5)]) == chars([pred.topk(n, 5)]), r
        np.testing.assert_array_equal(pred.encode(r), pred.encode(n))


def test_session_is_exact_while_normalization_edits_what_was_typed(pred):
    """Keystroke by keystroke on decomposed and CRLF text: an accent arriving after its base composes with it (the
    last id changes), an LF after a CR changes nothing; backspaces undo both."""
    nfd = unicodedata.normalize("NFD", "Le vieux château dominait la vallée. Noël à l'église ; Η Αθήνα είναι")
    crlf = "Hello\r\nwor\rld\r\n\r\nÀ bientôt\t\tx \u2028y  "
    for text in (nfd, crlf):
        prefixes = [text[:i] for i in range(len(text) + 1)]
        prefixes += [text[:i] for i in range(len(text) - 1, len(text) - 15, -1)]  # backspaces, one by one
        want = pred.topk_batch(prefixes, 3)
        s = pred.session()
        for p, w in zip(prefixes, want):
            got = s.topk(p, 3)
            assert chars([got]) == chars([w]), repr(p)
            np.testing.assert_allclose(probs([got]), probs([w]), rtol=1e-4, atol=1e-6)
        assert not any(unicodedata.combining(c) for c in pred.vocab.decode(pred.encode(nfd)))  # composed


def test_marks_are_suggested_only_where_they_attach(pred):
    """The whole ranking after a prefix holds a mark only where it can attach (AttachRule)."""
    vocab = pred.vocab
    bengali = {c for c in vocab.chars[1:] if unicodedata.category(c) in MARKS and unicodedata.name(c).startswith("BENGALI")}
    selector = "\ufe0f"
    assert len(bengali) >= 5 and selector in vocab.stoi  # the tiny corpus has Bengali signs and emoji

    def everything(prefix):
        return {c for c, _ in pred.topk(prefix, vocab.size)}

    for prefix in ["", "ঢাকা ", "ঢাকা,", "ঢাকা\n", "12", "Hello", "Москва", "İS", "ঢাকা 1", "x\u200d", "ঢাকা।"]:
        got = everything(prefix)
        assert not got & (bengali | {selector}), prefix
    after_letter = everything("ঢাক")
    assert bengali <= after_letter and selector not in after_letter
    assert bengali <= everything("ঢাকা")  # after a sign of the same script (the rule allows; the model ranks)
    assert selector in everything("Good morning! \u2600") and not everything("\u2600") & bengali
    # every ranking path applies it: batch, typing session, adaptation's ranking
    prefixes = ["ঢাকা ", "ঢাক", "Hello", ""]
    want = [everything(p) for p in prefixes]
    assert [{c for c, _ in r} for r in pred.topk_batch(prefixes, vocab.size)] == want
    s, adapted = pred.session(), AdaptiveSession(pred)
    assert [{c for c, _ in s.topk(p, vocab.size)} for p in prefixes] == want
    assert [{c for c, _ in r} for r in adapted.topk_batch(prefixes, vocab.size)] == want


def test_unknown_share_says_when_the_context_is_mostly_outside_the_vocabulary(pred):
    assert pred.unknown_share("") == 0.0 and pred.unknown_share("Hello wor") == 0.0
    assert pred.unknown_share("日本語のテキスト") == 1.0 >= MOSTLY_UNKNOWN  # kana are not in the tiny vocabulary
    assert pred.unknown_share("नमस्ते दुनिया") == 12 / 13  # the space is known
    assert pred.unknown_share("Hello wor" * 10 + "नमस्ते") < MOSTLY_UNKNOWN  # the last 32 characters count
    assert pred.session().unknown_share("नमस्ते") == 1.0


def test_bad_arguments_are_user_errors_naming_them(pred):
    cases = [
        (lambda: pred.topk_batch(["a", "b"], batch_size=0), "batch_size 0: must be at least 1"),
        (lambda: pred.topk_batch(["a", "b"], batch_size=-5), "batch_size -5"),
        (lambda: pred.topk_batch(["a"], batch_size=2.0), "batch_size: expected a whole number"),
        (lambda: pred.topk_batch(["a"], k=0), "k 0: must be at least 1"),
        (lambda: pred.topk_batch(["a"], k=-3), "k -3"),
        (lambda: pred.topk_batch(["a"], k="3"), "k: expected a whole number, got str"),
        (lambda: pred.topk_batch(["a"], k=2.5), "k: expected a whole number, got float"),
        (lambda: pred.topk_batch(["a"], k=True), "k: expected a whole number, got bool"),
        (lambda: pred.topk_batch("ab"), "prefixes: expected a list of strings, got str"),
        (lambda: pred.topk_batch(["a", 3]), "prefixes[1]: expected a string, got int"),
        (lambda: pred.topk_batch(None), "prefixes: expected a list"),
        (lambda: pred.topk_batch(["a"], stride=0), "stride 0: must be at least 1"),
        (lambda: pred.topk_batch(["a"], stride="2"), "stride: expected a whole number"),
        (lambda: pred.topk(None), "prefix: expected a string, got NoneType"),
        (lambda: pred.topk(b"abc"), "prefix: expected a string, got bytes"),
        (lambda: pred.topk("a", k=None), "k: expected a whole number"),
        (lambda: pred.session(stride=-1), "stride -1"),
        (lambda: pred.session().topk("a", 0), "k 0"),
        (lambda: pred.session().topk(5), "prefix: expected a string"),
        (lambda: pred.dist("abc"), "prefixes: expected a list"),
        (lambda: pred.unknown_share(["x"]), "prefix: expected a string"),
    ]
    for call, needle in cases:
        with pytest.raises(UserError) as e:
            call()
        assert needle in str(e.value)
    assert len(pred.topk_batch(["a", "b"], k=10**9, batch_size=10**9)) == 2  # huge: capped, not a failure
    if pred.windowed(2) is not pred:  # a windowed model (a Transformer, or a mixture with one): stride <= context
        with pytest.raises(UserError, match="stride"):
            pred.topk_batch(["a"], stride=10**6)
