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
wide as the hypotheses it is the exhaustive top-k. It needs only the engine contract: `logprobs` (one call per
step for all hypotheses), or with a key/value cache `feed`/`feed_many` (one batched step for all hypotheses).
The model reads prefix + hypothesis through the typing window of `CompletionConfig.stride` (engine.base.
window_start), so both ways give the same distributions, those of `Predictor.topk_batch(..., stride=stride)`.
A `Completer` keeps the distributions it computed, so in a typing session the next keystroke reuses the part of
the search tree under the typed character.
"""

from __future__ import annotations

import collections
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nextchar.engine import Predictor
from nextchar.engine.base import MOSTLY_UNKNOWN, unknown_share
from nextchar.errors import UserError, check_float, check_int, check_text

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
    stride: int = 16  # ids the model's window moves at once when full (engine typing window; capped at its context)
    incremental: bool = True  # use the backend's key/value cache when it has one
    length_weight: float = 0.0  # order by probability * length ** length_weight (0: most likely first)
    pool: int = 0  # completions found by probability before that reordering (0: k; else at least k)

    def __post_init__(self) -> None:
        problems = []
        checks = [(check_int, name, 1, 10_000) for name in ("beam", "max_chars", "max_run", "stride")]
        checks += [(check_int, "pool", 0, 10_000), (check_float, "length_weight", 0.0, 100.0),
                   (check_float, "min_prob", 0.0, 1.0)]
        for check, name, lo, hi in checks:
            try:
                check(getattr(self, name), name, lo, hi, **({"hi_open": True} if name == "min_prob" else {}))
            except UserError as e:
                problems.append(str(e))
        if not isinstance(self.incremental, bool):
            problems.append(f"incremental: expected true or false, got {type(self.incremental).__name__}")
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


def key_of(ids: np.ndarray) -> bytes:
    """Memo key of a window of ids; the key of ids[:j] is the key's first 4j bytes."""
    return ids.astype(np.int32).tobytes()


class Completer:
    """Word completion for one typing session (or one server): remembers the distributions it computed.

    The model reads the history of prefix + hypothesis (ids, `Predictor.encode`) through its typing window of
    `config.stride` (engine.base.window_start): with a key/value cache one batched `feed_many` per search step
    extends every hypothesis' cache by one id; without one, one `logprobs` call per step. The memo maps each
    history (its length and last `context` ids: all a window depends on) to its log-distribution and, for the
    most recent ones, the backend's state after it, so results never depend on what was asked before, and a
    keystroke that types the first character of an earlier hypothesis finds most of its search tree computed.
    Not thread-safe: use one per thread (the server runs it on its model thread).
    """

    def __init__(self, pred: Predictor, config: CompletionConfig | None = None, memo_size: int = 4096,
                 states: int = 256):
        self.config = config or CompletionConfig()
        check_int(memo_size, "memo_size")
        check_int(states, "states", 0)
        self.pred = pred.windowed(min(self.config.stride, pred.context))
        self.ids = word_ids(pred)
        self.incremental = bool(pred.incremental and self.config.incremental)
        self.memo_size = memo_size
        self.max_states = states
        self._memo: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
        self._states: collections.OrderedDict[bytes, object] = collections.OrderedDict()
        self.computed = 0  # distributions computed by the model (the rest came from the memo)
        self.calls = 0  # model calls

    def clear(self) -> None:
        self._memo.clear()
        self._states.clear()

    # -- distributions -----------------------------------------------------------------------------
    def _key(self, history: np.ndarray) -> bytes:
        """Memo key of a history: its length and its last `context` ids decide the window (and so the answer)."""
        return len(history).to_bytes(8, "little") + history[-self.pred.context:].astype(np.int32).tobytes()

    def _root(self, prefix: str) -> np.ndarray:
        """The history (H,) the search starts from: prefix's ids, less whole strides of a long past that no window
        of prefix + hypothesis reaches (window starts move by whole strides, so every window stays the same)."""
        pred = self.pred
        hist = pred.encode(prefix)
        keep = pred.context + 2 * pred.stride + self.config.max_chars  # > context: a cut history never shows START
        drop = max(0, len(hist) - keep)
        return hist[drop - drop % pred.stride:]

    def _remember(self, key: bytes, lp: np.ndarray, state: object = None) -> None:
        self._memo[key] = lp
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)
        if state is not None:
            self._states[key] = state
            self._states.move_to_end(key)
            while len(self._states) > self.max_states:
                self._states.popitem(last=False)

    def _model_logprobs(self, nodes: list[np.ndarray]) -> np.ndarray:
        """(N, V) model log-distributions after each history: from the memo, else one model call (a batched
        feed where the parents' states are at hand)."""
        pred = self.pred
        keys = [self._key(n) for n in nodes]
        out = np.empty((len(nodes), pred.vocab.size))  # (N, V)
        todo: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                out[i] = hit
            else:
                todo.setdefault(key, []).append(i)
        if not todo:
            return out
        fresh: dict[bytes, np.ndarray] = {}  # this call's results (a small memo may already have evicted some)

        def keep(key: bytes, lp: np.ndarray, state: object = None) -> None:
            fresh[key] = lp
            self._remember(key, lp, state)

        first = [v[0] for v in todo.values()]
        self.computed += len(first)
        if not self.incremental:
            self.calls += 1
            for key, lp in zip(todo, pred.logprobs([nodes[i] for i in first])):
                keep(key, lp.copy())  # not a view: the batch's array is freed
        else:
            parent = {i: self._states.get(self._key(nodes[i][:-1])) for i in first if len(nodes[i])}
            batch = [i for i, st in parent.items() if st is not None]
            if batch:
                self.calls += 1
                states, lps = pred.feed_many([parent[i] for i in batch], np.array([nodes[i][-1] for i in batch]))
                for i, st, lp in zip(batch, states, lps):
                    keep(keys[i], lp.copy(), st)
            for i in sorted(set(first) - set(batch)):  # no parent state: from the longest remembered ancestor
                self.calls += 1
                ids, j, state = nodes[i], len(nodes[i]), None
                while j > 0 and state is None and len(ids) - j < self.config.max_chars + 2:
                    j -= 1
                    state = self._states.get(self._key(ids[:j]))
                if state is None:
                    j, state = 0, pred.start()
                state, lp = pred.feed(state, ids[j:])
                keep(keys[i], lp.copy(), state)
        for key, idx in todo.items():
            out[idx] = fresh[key]
        return out

    def _logprobs(self, prefix: str, root: np.ndarray, paths: list[str], session: AdaptiveSession | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(N, V) log-distributions after prefix + each path (adapted to the session when given), and (N, W) which
        word characters may follow each (the engine's suggestion rules: a mark only where it attaches)."""
        vocab = self.pred.vocab
        nodes = [np.concatenate([root, vocab.encode(s).astype(np.int64)]) for s in paths]
        ok = self.pred.suggestible_after(nodes)[:, self.ids.word]  # (N, W)
        lp = self._model_logprobs(nodes)  # (N, V)
        if session is None:
            return lp, ok
        with np.errstate(divide="ignore"):
            return np.log(session.dist_batch([prefix + s for s in paths], np.exp(lp))), ok  # (N, V)

    # -- the search --------------------------------------------------------------------------------
    def complete(self, prefix: str, k: int = 3, session: AdaptiveSession | None = None,
                 exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The k most likely completions of the current word of prefix: (rest of the word, probability), best first.

        Fewer than k when fewer exist (or survive `min_prob`); equal probabilities are ordered by text.
        `session` mixes that user's cache model into every distribution of the search (adapt.py). `exclude`
        holds completions not to offer (e.g. those already shown for this word and not taken); the search
        finds the k best of the others. Raises UserError for k < 1.
        """
        k = check_int(k, "k")
        check_text(prefix, "prefix")
        if isinstance(exclude, str) or not all(isinstance(x, str) for x in exclude):
            raise UserError("exclude: expected a collection of strings (completions not to offer)")
        cfg, ids = self.config, self.ids
        root = self._root(prefix)
        max_chars = cfg.max_chars
        floor = np.log(cfg.min_prob) if cfg.min_prob > 0 else -np.inf
        want = k
        k = max(k, cfg.pool)  # the search keeps the k most likely; the best `want` of them by score are returned
        finished: list[tuple[float, str]] = []  # (log-probability, completion), the best k so far
        texts, logp, runs = [""], np.zeros(1), np.zeros(1, dtype=np.int64)  # the frontier: hypotheses to expand
        while texts:
            lp, ok = self._logprobs(prefix, root, texts, session)  # (N, V), (N, W)
            ends = logp + logsumexp_rows(lp[:, ids.end])  # (N,) the word ends after each hypothesis
            for s, e in zip(texts, ends.tolist()):
                if s and e > floor and s not in exclude:
                    finished.append((e, s))
            finished = sorted(finished, key=lambda t: (-t[0], t[1]))[:k]
            bar = max(floor, finished[-1][0]) if len(finished) == k else floor
            if len(texts[0]) >= max_chars:
                break
            ext = np.where(ok, logp[:, None] + lp[:, ids.word], -np.inf)  # (N, W) one more word character
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
                    if s not in exclude:
                        finished.append((q, s))
                else:
                    nxt_texts.append(s)
                    nxt_logp.append(q)
                    nxt_runs.append(run)
            finished = sorted(finished, key=lambda t: (-t[0], t[1]))[:k]
            texts, logp, runs = nxt_texts, np.array(nxt_logp), np.array(nxt_runs, dtype=np.int64)
        if cfg.length_weight:
            finished = sorted(finished, key=lambda t: (-(t[0] + cfg.length_weight * np.log(len(t[1]))), t[1]))
        return [(s, float(np.exp(q))) for q, s in finished[:want]]


def complete(pred: Predictor, prefix: str, k: int = 3, session: AdaptiveSession | None = None,
             config: CompletionConfig | None = None, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
    """The k most likely ways to finish the current word of prefix: (rest of the word, probability), best first.

    See the module docstring for the word rule and how probabilities are defined. Uses only the predictor's
    `vocab`, `context` and `logprobs` (every backend). For a typing session keep one `Completer` instead:
    it reuses what the previous keystroke computed. Raises UserError for k < 1 or a bad config.
    """
    return Completer(pred, config).complete(prefix, k, session, exclude)


def record(pred: Predictor, prefix: str, row: list[tuple[str, float]]) -> dict:
    """The JSON answer for one prefix (file mode's lines, `complete --json`): the prefix as given, the completions
    best first, their probabilities, and how much of the context the model does not know."""
    share = unknown_share(pred.encode(prefix))
    return {"prefix": prefix, "completions": [s for s, _ in row], "probs": [round(q, 6) for _, q in row],
            "unknown_share": round(share, 4), "mostly_unknown": share >= MOSTLY_UNKNOWN}


def complete_file(pred: Predictor, input_path: str | Path, output_path: str | Path, k: int = 3,
                  as_json: bool = False, config: CompletionConfig | None = None) -> int:
    """One prefix per input line -> one line of up to k completions, tab-separated (or JSON lines with probabilities).

    Lines are read like `predict`'s file mode (files.read_lines: universal newlines; UTF-8, or UTF-16/32 with a
    byte-order mark); JSON lines are `record`s.
    Completions are word characters only, so a tab or newline never appears inside one. Writes atomically.
    """
    from nextchar import files

    k = check_int(k, "-k")
    prefixes = files.read_lines(input_path)
    completer = Completer(pred, config)
    rows = [completer.complete(p, k) for p in prefixes]
    if as_json:
        out = "".join(files.dumps(record(pred, p, r)) + "\n" for p, r in zip(prefixes, rows))
    else:
        out = "".join("\t".join(s for s, _ in r) + "\n" for r in rows)
    files.atomic_write_bytes(output_path, out.encode("utf-8"))
    return len(prefixes)
