"""Word completion: the k most likely ways to finish the current word, by beam search over next-character distributions.

The word rule (the same one the keystroke benchmark uses for every system):

- A word is a run of word characters: letters, marks and numbers (Unicode categories L*, M*, N*) and the
  zero-width (non-)joiners U+200C/U+200D that Persian and Indic scripts write inside words. Everything else
  ends a word: spaces, punctuation (apostrophes and hyphens included, so "don't" is "don" + "'" + "t"), line
  breaks, symbols and emoji. Right-to-left scripts need no rule of their own: text is in logical order.
- A completion is the rest of the current word (the word characters that follow the prefix), at least one
  character long, never a special or a control character. After a prefix that ends in a space or punctuation
  the current word is empty and the completions are the most likely next words.
- Its probability is the model's probability of those characters followed by any character that ends a word:
  P(c1 .. cn) * P(word ends | prefix + c1 .. cn), so completions of different lengths compare.
- Scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) have no end character to
  score: there a completion also ends after `max_run` characters of such a script, with the probability of
  its characters alone (typical Chinese and Japanese words are one to four characters).
- Accepting a completion types its characters and then a space; a punctuation mark or line break typed right
  after it takes that space's place (as phone keyboards do), so a word before "," costs no extra keystroke.

The search keeps the `beam` most likely unfinished hypotheses per step and never extends one that is already
less likely than the k-th best finished completion (its extensions can only be less likely), so with a beam as
wide as the hypotheses it is the exhaustive top-k. It needs only the predictor's `logprobs`: one call per step
for all hypotheses. A `Completer` keeps the distributions it computed (keyed by the model's window of ids), so
in a typing session the next keystroke reuses the part of the search tree under the typed character.
"""

from __future__ import annotations

import collections
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nextchar.errors import UserError
from nextchar.predict import Predictor, context_ids

if TYPE_CHECKING:
    from nextchar.adapt import AdaptiveSession

JOINERS = {"\u200c", "\u200d"}  # zero-width non-joiner / joiner: inside Persian, Bengali, Devanagari words
# Unicode character-name prefixes of scripts written without spaces between words.
NO_SPACE_SCRIPTS = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA",
                    "HALFWIDTH KATAKANA", "THAI CHARACTER", "LAO ", "KHMER ", "MYANMAR ", "TIBETAN ")


def is_word_char(c: str) -> bool:
    """Whether c continues a word (letters, marks, numbers, zero-width joiners); see the module docstring."""
    return unicodedata.category(c)[0] in "LMN" or c in JOINERS


def is_no_space_char(c: str) -> bool:
    """A word character of a script written without spaces between words."""
    return is_word_char(c) and unicodedata.name(c, "").startswith(NO_SPACE_SCRIPTS)


def current_word(prefix: str) -> str:
    """The word being typed: the trailing run of word characters of prefix ('' after a space or punctuation)."""
    i = len(prefix)
    while i > 0 and is_word_char(prefix[i - 1]):
        i -= 1
    return prefix[i:]


@dataclass(frozen=True)
class CompletionConfig:
    """How the search runs; the defaults were measured with benchmarks/keystroke_savings.py and
    benchmarks/complete_latency.py (docs/keystrokes.md)."""

    beam: int = 4  # unfinished hypotheses kept per step
    max_chars: int = 20  # longest completion, in characters
    max_run: int = 4  # longest completion in a script without spaces (see the module docstring)
    min_prob: float = 0.0  # hypotheses less likely than this are dropped (0: none)

    def __post_init__(self) -> None:
        problems = []
        if self.beam < 1:
            problems.append(f"beam {self.beam}: must be at least 1")
        if self.max_chars < 1:
            problems.append(f"max_chars {self.max_chars}: must be at least 1")
        if self.max_run < 1:
            problems.append(f"max_run {self.max_run}: must be at least 1")
        if not 0.0 <= self.min_prob < 1.0:
            problems.append(f"min_prob {self.min_prob}: must be in [0, 1)")
        if problems:
            raise UserError("completion config: " + "; ".join(problems))


@dataclass
class WordIds:
    """The vocabulary split for the word rule (computed once per predictor)."""

    word: np.ndarray  # (W,) ids that may extend a completion: suggestible word characters
    end: np.ndarray  # (E,) ids that end a word: every non-special character that is not a word character
    no_space: np.ndarray  # (V,) bool: word characters of scripts without spaces


def word_ids(pred: Predictor) -> WordIds:
    cached = getattr(pred, "_word_ids", None)
    if cached is not None:
        return cached
    ok = pred.suggestible()
    chars = pred.vocab.chars
    word = np.array([i for i, c in enumerate(chars) if ok[i] and is_word_char(c)], dtype=np.int64)
    end = np.array([i for i, c in enumerate(chars) if not pred.vocab.is_special(i) and not is_word_char(c)],
                   dtype=np.int64)
    no_space = np.array([bool(ok[i]) and is_no_space_char(c) for i, c in enumerate(chars)])
    out = WordIds(word, end, no_space)
    pred._word_ids = out  # a plain attribute: any backend object takes it
    return out


def logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x), axis=1)) of (N, M), stable; -inf for rows of -inf."""
    if x.shape[1] == 0:
        return np.full(len(x), -np.inf)
    m = x.max(axis=1)  # (N,)
    safe = np.where(np.isfinite(m), m, 0.0)
    return safe + np.log(np.exp(x - safe[:, None]).sum(axis=1))


class Completer:
    """Word completion for one typing session (or one server): remembers the distributions it computed.

    The memo maps the model's window of ids to its log-distribution, so results never depend on what was
    asked before, and a keystroke that types the first character of an earlier hypothesis finds most of its
    search tree computed. Not thread-safe: use one per thread (the server runs it on its model thread).
    """

    def __init__(self, pred: Predictor, config: CompletionConfig | None = None, memo_size: int = 4096):
        self.pred = pred
        self.config = config or CompletionConfig()
        self.ids = word_ids(pred)
        self.memo_size = memo_size
        self._memo: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
        self.computed = 0  # distributions computed by the model (the rest came from the memo)

    def clear(self) -> None:
        self._memo.clear()

    # -- distributions -----------------------------------------------------------------------------
    def _model_logprobs(self, texts: list[str]) -> np.ndarray:
        """(N, V) model log-distributions after each text, from the memo or one batched logprobs call."""
        pred = self.pred
        ctx = [context_ids(pred.vocab, t, pred.context) for t in texts]
        keys = [c.astype(np.int32).tobytes() for c in ctx]
        out = np.empty((len(texts), pred.vocab.size))  # (N, V)
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                out[i] = hit
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            rows = [v[0] for v in todo.values()]
            lp = pred.logprobs([ctx[i] for i in rows])  # (M, V)
            self.computed += len(rows)
            for (key, idx), row in zip(todo.items(), lp):
                out[idx] = row
                self._memo[key] = row.copy()  # not a view: the batch's array is freed
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        return out

    def _logprobs(self, texts: list[str], session: AdaptiveSession | None) -> np.ndarray:
        lp = self._model_logprobs(texts)  # (N, V)
        if session is None:
            return lp
        with np.errstate(divide="ignore"):
            return np.log(session.dist_batch(texts, np.exp(lp)))  # (N, V)

    # -- the search --------------------------------------------------------------------------------
    def complete(self, prefix: str, k: int = 3, session: AdaptiveSession | None = None) -> list[tuple[str, float]]:
        """The k most likely completions of the current word of prefix: (rest of the word, probability), best first.

        Fewer than k when fewer exist (or survive `min_prob`); equal probabilities are ordered by text.
        `session` mixes that user's cache model into every distribution of the search (adapt.py).
        Raises UserError for k < 1.
        """
        if k < 1:
            raise UserError(f"-k {k}: must be at least 1")
        cfg, ids = self.config, self.ids
        # the model reads the last `context` ids and a session's cache its last max_text characters: the rest of
        # a long prefix changes nothing, and dropping it keeps every prefix + hypothesis string short
        keep = self.pred.context if session is None else max(self.pred.context, session.max_text)
        prefix = prefix[-keep:]
        floor = np.log(cfg.min_prob) if cfg.min_prob > 0 else -np.inf
        finished: list[tuple[float, str]] = []  # (log-probability, completion), the best k so far
        texts, logp, runs = [""], np.zeros(1), np.zeros(1, dtype=np.int64)  # the frontier: hypotheses to expand
        while texts:
            lp = self._logprobs([prefix + s for s in texts], session)  # (N, V)
            ends = logp + logsumexp_rows(lp[:, ids.end])  # (N,) the word ends after each hypothesis
            for s, e in zip(texts, ends.tolist()):
                if s and e > floor:
                    finished.append((e, s))
            finished = sorted(finished, key=lambda t: (-t[0], t[1]))[:k]
            bar = max(floor, finished[-1][0]) if len(finished) == k else floor
            if len(texts[0]) >= cfg.max_chars:
                break
            ext = logp[:, None] + lp[:, ids.word]  # (N, W) one more word character
            n = min(cfg.beam, int((ext > bar).sum()))
            if n == 0:
                break
            flat = np.argpartition(-ext, n - 1, axis=None)[:n] if n < ext.size else np.arange(ext.size)
            flat = flat[np.lexsort((flat, -ext.ravel()[flat]))]  # best first, ties by position: deterministic
            rows, cols = np.unravel_index(flat, ext.shape)
            nxt_texts, nxt_logp, nxt_runs = [], [], []
            for r, c in zip(rows.tolist(), cols.tolist()):
                wid = int(ids.word[c])
                s, q = texts[r] + self.pred.vocab.chars[wid], float(ext[r, c])
                run = int(runs[r]) + int(ids.no_space[wid])
                if run >= cfg.max_run:
                    # a run without spaces ends here, scored by its characters alone (no end character)
                    finished.append((q, s))
                else:
                    nxt_texts.append(s)
                    nxt_logp.append(q)
                    nxt_runs.append(run)
            finished = sorted(finished, key=lambda t: (-t[0], t[1]))[:k]
            texts, logp, runs = nxt_texts, np.array(nxt_logp), np.array(nxt_runs, dtype=np.int64)
        return [(s, float(np.exp(q))) for q, s in finished]


def complete(pred: Predictor, prefix: str, k: int = 3, session: AdaptiveSession | None = None,
             config: CompletionConfig | None = None) -> list[tuple[str, float]]:
    """The k most likely ways to finish the current word of prefix: (rest of the word, probability), best first.

    See the module docstring for the word rule and how probabilities are defined. Uses only the predictor's
    `vocab`, `context` and `logprobs` (every backend). For a typing session keep one `Completer` instead:
    it reuses what the previous keystroke computed. Raises UserError for k < 1 or a bad config.
    """
    return Completer(pred, config).complete(prefix, k, session)


def complete_file(pred: Predictor, input_path: str | Path, output_path: str | Path, k: int = 3,
                  as_json: bool = False, config: CompletionConfig | None = None) -> int:
    """One prefix per input line -> one line of up to k completions, tab-separated (or JSON lines with probabilities).

    Lines are split like `predict`'s file mode: newline stripped, a trailing CR dropped, other spaces kept.
    Completions are word characters only, so a tab or newline never appears inside one. Writes atomically.
    """
    from nextchar import checkpoint

    input_path = Path(input_path)
    try:
        raw = input_path.read_bytes()
    except OSError as e:
        raise UserError(f"{input_path}: cannot read input ({e.strerror})") from None
    lines = raw.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    prefixes = [ln.removesuffix("\r") for ln in lines]
    completer = Completer(pred, config)
    rows = [completer.complete(p, k) for p in prefixes]
    if as_json:
        out = "".join(json.dumps({"prefix": p, "completions": [s for s, _ in r], "probs": [round(q, 6) for _, q in r]},
                                 ensure_ascii=False) + "\n" for p, r in zip(prefixes, rows))
    else:
        out = "".join("\t".join(s for s, _ in r) + "\n" for r in rows)
    checkpoint.atomic_write_bytes(output_path, out.encode("utf-8"))
    return len(prefixes)
