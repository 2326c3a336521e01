"""The Transformer window: shared batch windows, and typing states that reuse the KV cache until the window jumps."""

import numpy as np
import pytest
import torch

from nextchar import engine
from nextchar.engine.base import window
from nextchar.engine.windowed import share_windows
from nextchar.errors import UserError

torch.set_num_threads(1)

TEXT = ("Le vieux château dominait la vallée. The quick brown fox jumps over the lazy dog; "
        "Москва — столица России. Η Αθήνα είναι η πρωτεύουσα. 北京是中国的首都。") * 3


@pytest.fixture(scope="module", params=["tiny_run", "tiny_hash_run", "tiny_onnx"])
def pred(request):
    """PyTorch with and without hashed n-gram inputs, and ONNX: each keeps its own typing state."""
    return engine.load(request.getfixturevalue(request.param))


def keystrokes(text, backspace_every=11):
    """The prefixes a user produces typing text with a backspace now and then."""
    prefix, out = "", []
    for i, ch in enumerate(text):
        prefix = prefix[:-1] if i % backspace_every == backspace_every - 1 else prefix + ch
        out.append(prefix)
    return out


def test_share_windows_links_each_context_to_one_that_begins_with_it():
    ctx = [np.array(c) for c in ([1, 2, 3], [1, 2], [1, 2, 4], [1, 2, 3], [5], [1], [300, 2])]
    owner = share_windows(ctx)
    for i, o in enumerate(owner):
        assert ctx[o][: len(ctx[i])].tolist() == ctx[i].tolist()
    assert owner[1] in (0, 2, 3) and owner[5] in (0, 2, 3) and owner[4] == 4 and owner[6] == 6


def test_session_reuses_the_cache_while_the_text_fits_the_context(pred):
    s = pred.session()
    prefixes = keystrokes(TEXT[: pred.context - 1]) + ["Le vieux XYZ", "Le", "Le", "", "Le vieux château"]
    for p in prefixes:
        np.testing.assert_allclose(s.dist(p), pred.dist([p])[0], rtol=1e-4, atol=1e-6)
    assert s.recomputes == 2  # the first keystroke and the empty prefix; edits and backspaces truncate the cache
    assert s.fed < 2 * len(prefixes)


@pytest.mark.parametrize("stride", [None, 1, 5, 16])
def test_session_past_the_context_uses_its_documented_window(pred, stride):
    C = pred.context
    s = pred.session(stride)
    assert s.stride == (stride or 1)
    stride = s.stride
    prefixes = keystrokes(TEXT) + [TEXT[:200] + "X" + TEXT[201:260], TEXT[:10] + "Y" + TEXT[11:300]]
    for p in prefixes:
        win = s.pred.window(pred.encode(p))
        assert win.tolist() == window(pred.encode(p), C, pred.start_id, stride).tolist()
        assert C - stride < len(win) <= C or len(win) == len(p) + 1
        np.testing.assert_allclose(s.logprobs(p), s.pred.window_logprobs([win])[0], rtol=1e-4, atol=1e-5)
    # typing on recomputes once per `stride` keystrokes past the context, not every keystroke
    s2 = pred.session(stride)
    for n in range(len(TEXT) + 1):
        s2.topk(TEXT[:n])
    assert s2.recomputes == 1 + -(-(len(TEXT) + 1 - C) // stride)  # the first keystroke, then each window jump
    assert s2.fed < len(TEXT) + s2.recomputes * C


def test_stride_is_checked(pred):
    with pytest.raises(UserError, match="stride"):
        pred.topk_batch(["a"], 3, stride=pred.context + 1)
