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
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nextchar.errors import UserError
from nextchar.predict import Predictor, context_ids, window_ids

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
    room: int = 16  # ids of context kept free for the hypotheses by a backend with a key/value cache
    stride: int = 8  # ids the prefix's window moves at once when it is full (key/value cache backends)
    incremental: bool = True  # use the backend's key/value cache when it has one
    length_weight: float = 0.0  # order by probability * length ** length_weight (0: most likely first)
    pool: int = 0  # completions found by probability before that reordering (0: k; else at least k)

    def __post_init__(self) -> None:
        problems = []
        for name in ("beam", "max_chars", "max_run", "room", "stride"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)}: must be at least 1")
        if self.length_weight < 0 or self.pool < 0:
            problems.append("length_weight and pool must be >= 0")
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


def key_of(ids: np.ndarray) -> bytes:
    """Memo key of a window of ids; the key of ids[:j] is the key's first 4j bytes."""
    return ids.astype(np.int32).tobytes()


class Completer:
    """Word completion for one typing session (or one server): remembers the distributions it computed.

    The model sees, for prefix + hypothesis: with `logprobs` only, the last `context` ids (as Predictor.topk);
    with a backend's key/value cache, the prefix's window as a typing `Session` keeps it (START + the whole
    prefix while it fits in context - room ids, then a window that moves `stride` ids at a time) followed by
    the hypothesis, and one batched feed per search step for all hypotheses (Predictor._feed_many).
    The memo maps each window of ids to its log-distribution (and, for the most recent ones, the backend's
    cache after it), so results never depend on what was asked before, and a keystroke that types the first
    character of an earlier hypothesis finds most of its search tree computed.
    Not thread-safe: use one per thread (the server runs it on its model thread).
    """

    def __init__(self, pred: Predictor, config: CompletionConfig | None = None, memo_size: int = 4096,
                 states: int = 256):
        self.pred = pred
        self.config = config or CompletionConfig()
        self.ids = word_ids(pred)
        self.incremental = bool(pred.incremental and self.config.incremental)
        if self.incremental and pred.context <= self.config.room:
            raise UserError(f"completion room {self.config.room}: must be below the model's context ({pred.context})")
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
    def _window(self, prefix: str) -> np.ndarray:
        """The ids the model sees before the hypotheses: the root of the search."""
        pred = self.pred
        if not self.incremental:
            return context_ids(pred.vocab, prefix, pred.context)
        return window_ids(pred.vocab, prefix, pred.context - self.config.room, self.config.stride)

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
        """(N, V) model log-distributions after each window of ids: from the memo, else one model call
        (a batched feed where the parents' caches are at hand)."""
        pred = self.pred
        keys = [key_of(n) for n in nodes]
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
        first = [v[0] for v in todo.values()]
        self.computed += len(first)
        if not self.incremental:
            self.calls += 1
            for key, lp in zip(todo, pred.logprobs([nodes[i] for i in first])):
                self._remember(key, lp.copy())  # not a view: the batch's array is freed
        else:
            batch = [i for i in first if len(nodes[i]) > 1 and keys[i][:-4] in self._states]
            if batch:
                self.calls += 1
                parents = [self._states[keys[i][:-4]] for i in batch]
                states, lps = pred._feed_many(parents, np.array([nodes[i][-1] for i in batch]),
                                              [nodes[i][:-1] for i in batch])
                for i, st, lp in zip(batch, states, lps):
                    self._remember(keys[i], lp.copy(), st)
            for i in sorted(set(first) - set(batch)):  # no parent cache: feed from the longest cached ancestor
                self.calls += 1
                ids, j, state = nodes[i], len(nodes[i]) - 1, None
                while j > 0 and state is None:
                    state = self._states.get(keys[i][:4 * j])
                    j -= state is None
                state = pred._truncate(state, j) if state is not None else pred._start()
                state, lp = pred._feed(state, ids[j:].astype(np.int64), ids[:j].astype(np.int64))
                self._remember(keys[i], lp.copy(), state)
        for key, idx in todo.items():
            out[idx] = self._memo[key]
        return out

    def _logprobs(self, prefix: str, root: np.ndarray, paths: list[str], session: AdaptiveSession | None
                  ) -> np.ndarray:
        """(N, V) log-distributions after prefix + each path (adapted to the session when given)."""
        vocab = self.pred.vocab
        if self.incremental:
            nodes = [np.concatenate([root, vocab.encode(s)]) for s in paths]
        else:
            nodes = [context_ids(vocab, prefix + s, self.pred.context) for s in paths]
        lp = self._model_logprobs(nodes)  # (N, V)
        if session is None:
            return lp
        with np.errstate(divide="ignore"):
            return np.log(session.dist_batch([prefix + s for s in paths], np.exp(lp)))  # (N, V)

    # -- the search --------------------------------------------------------------------------------
    def complete(self, prefix: str, k: int = 3, session: AdaptiveSession | None = None,
                 exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The k most likely completions of the current word of prefix: (rest of the word, probability), best first.

        Fewer than k when fewer exist (or survive `min_prob`); equal probabilities are ordered by text.
        `session` mixes that user's cache model into every distribution of the search (adapt.py). `exclude`
        holds completions not to offer (e.g. those already shown for this word and not taken); the search
        finds the k best of the others. Raises UserError for k < 1.
        """
        if k < 1:
            raise UserError(f"-k {k}: must be at least 1")
        cfg, ids = self.config, self.ids
        # the model reads the last `context` ids and a session's cache its last max_text characters: the rest of
        # a long prefix changes nothing, and dropping it keeps every prefix + hypothesis string short
        keep = self.pred.context if session is None else max(self.pred.context, session.max_text)
        drop = max(0, len(prefix) - keep)
        prefix = prefix[drop - drop % cfg.stride:]  # whole strides, so a moving window keeps its place
        root = self._window(prefix)
        max_chars = cfg.max_chars if not self.incremental else min(cfg.max_chars, self.pred.context - len(root))
        floor = np.log(cfg.min_prob) if cfg.min_prob > 0 else -np.inf
        want = k
        k = max(k, cfg.pool)  # the search keeps the k most likely; the best `want` of them by score are returned
        finished: list[tuple[float, str]] = []  # (log-probability, completion), the best k so far
        texts, logp, runs = [""], np.zeros(1), np.zeros(1, dtype=np.int64)  # the frontier: hypotheses to expand
        while texts:
            lp = self._logprobs(prefix, root, texts, session)  # (N, V)
            ends = logp + logsumexp_rows(lp[:, ids.end])  # (N,) the word ends after each hypothesis
            for s, e in zip(texts, ends.tolist()):
                if s and e > floor and s not in exclude:
                    finished.append((e, s))
            finished = sorted(finished, key=lambda t: (-t[0], t[1]))[:k]
            bar = max(floor, finished[-1][0]) if len(finished) == k else floor
            if len(texts[0]) >= max_chars:
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
