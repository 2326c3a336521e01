"""The prediction contract every backend implements, and the rules all of them share.

One place for each rule:
- text in: `prepare_prefix` (what a surface's prefix becomes before encoding: the training text's normalization,
  nextchar.text) and `Predictor.encode`; `unknown_share` (how much of it the vocabulary lacks);
- the window a model with a bounded context reads: `window_start` / `window` (the typing window);
- what may be suggested and in which order: `suggestible_mask`, `AttachRule` (marks only where they attach),
  `top_ids`, `rank`;
- the typing session (`Session`), built on the public incremental interface start / feed / truncate.

A context (a "history") is the ids of everything typed so far, `encode(prefix)`, without the paragraph start
that precedes every text: backends add START where their window reaches the beginning. Each backend reads
what its window needs of a history (a Transformer its last `context` ids, an n-gram its last order - 1) and
its incremental state remembers what it needs of the past, so components with different windows mix.
"""

from __future__ import annotations

import copy
import gc
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from nextchar.errors import UserError, check_int, check_text, check_texts
from nextchar.text import prefix_form
from nextchar.vocab import UNK, Vocab

START = "\n"  # the context of an empty prefix: the start of a paragraph
# Unicode categories never offered as a suggestion: controls (newline, tab), line/paragraph separators,
# surrogates, private use, unassigned. A suggestion line in file mode can then never break.
NEVER_SUGGESTED = {"Cc", "Zl", "Zp", "Cs", "Co", "Cn"}
CHUNK = 8192  # prefixes per logprobs call in topk_batch/dist: bounds the (N, V) distributions held at once
MAX_CHUNK = 65536  # topk_batch's batch_size is capped here: a huge one must not hold millions of rows at once
UNKNOWN_WINDOW = 32  # the last characters of a prefix that unknown_share looks at
MOSTLY_UNKNOWN = 0.5  # unknown_share at or above which an answer says the context is mostly outside the vocabulary

State = Any  # a backend's incremental state: opaque to callers, never changed in place by the engine


# -- text in ------------------------------------------------------------------------------------------------


def prepare_prefix(prefix: str) -> str:
    """The text a prefix stands for before encoding: the one place where every surface's input is normalized.

    nextchar.text.prefix_form, the normalization `prepare` gave the training text (NFC, line breaks, controls,
    whitespace runs), with a typed line break read as a paragraph break and a trailing space kept as one space
    (see nextchar.text). Every surface (CLI, file mode, Python API, server, sessions, adaptation, completion,
    every backend) reads its prefixes through it. Raises UserError when prefix is not a str.
    """
    return prefix_form(check_text(prefix, "prefix"))


def unknown_share(history: np.ndarray) -> float:
    """The share of the last UNKNOWN_WINDOW ids of a history (H,) that are <unk> (0.0 for an empty history)."""
    tail = history[-UNKNOWN_WINDOW:]
    return float(np.count_nonzero(tail == UNK) / len(tail)) if len(tail) else 0.0


# -- the window -----------------------------------------------------------------------------------------------


def window_start(n: int, context: int, stride: int = 1) -> int:
    """Where a model's window starts among the n ids of START + history: 0 while they fit, else a multiple of stride.

    This is the typing window, the one rule for batches and sessions alike: the smallest multiple of `stride`
    that leaves at most `context` ids. While typing goes on the start stays put (cached keys and values stay
    valid) and jumps `stride` ids ahead when the window is full, so the model sees the last context - stride + 1
    .. context ids and recomputes its window once every `stride` keystrokes. stride 1 is the exact last-`context`
    window (what evaluation and a plain `topk` use by default).
    """
    if n <= context:
        return 0
    return -(-(n - context) // stride) * stride


def window(history: np.ndarray, context: int, start_id: int, stride: int = 1) -> np.ndarray:
    """The ids (T,) a model with `context` reads after history (H,): START + history cut by `window_start`."""
    a = window_start(len(history) + 1, context, stride)
    if a == 0:
        return np.concatenate(([start_id], history)).astype(np.int64)
    return np.asarray(history[a - 1:], dtype=np.int64)


def check_stride(stride: int, context: int) -> int:
    """stride as an int in 1..context, else a UserError naming it."""
    check_int(stride, "stride")
    if stride > context:
        raise UserError(f"stride {stride}: must be between 1 and the model's context ({context})")
    return int(stride)


# -- suggestions -----------------------------------------------------------------------------------------------


def suggestible_mask(vocab: Vocab) -> np.ndarray:
    """Boolean mask (V,) of ids that may be suggested: no specials, no newline or other control character."""
    return np.array([not vocab.is_special(i) and unicodedata.category(c) not in NEVER_SUGGESTED
                     for i, c in enumerate(vocab.chars)])


MARKS = {"Mn", "Mc", "Me"}  # combining and dependent marks: they attach to the character before them
JOINERS = {"\u200c", "\u200d"}  # zero-width non-joiner/joiner: inside words (Persian, Indic) and emoji sequences
LOOKBACK = 32  # how far back AttachRule looks past transparent characters for the one a mark would attach to
# An anchor is the character a suggestion would follow. Its class: BLOCK takes no mark (start of text, space,
# punctuation, digit, <unk>, ...), SYMBOL only emoji selectors and joiners, a script class (2, 3, ...) the marks of
# its script and the script-neutral ones; SKIP ids (marks without a script, selectors, joiners) are looked past.
BLOCK, SYMBOL, SKIP = 0, 1, -1


def _script(c: str) -> str:
    """The script of a letter or mark as its Unicode name says it ("BENGALI VOWEL SIGN AA" -> "BENGALI").

    The standard library has no Script property; the names of the letters and marks of one script start with
    its name, which is all the rule needs (marks named "COMBINING ..." belong to no script).
    """
    return unicodedata.name(c, "").split(" ", 1)[0]


class AttachRule:
    """Where a combining or dependent mark may be suggested: only where it can attach (issue 10, rule 6).

    A mark (category Mn, Mc or Me) is never suggested after the start of the text, a space or line break,
    punctuation, a digit, a symbol, an unknown character, or a letter of another script: a Bengali vowel sign
    needs a Bengali letter (or another Bengali sign) before it, a Hebrew point a Hebrew letter. Marks named
    "COMBINING ..." (no script) may follow a letter of any script; variation selectors (emoji presentation) only a
    symbol; the zero-width joiners (U+200C/U+200D, which only make sense inside a word or an emoji sequence) a
    letter, a mark or a symbol. Marks without a script, selectors and joiners are looked past (at most LOOKBACK) to
    find the character a suggestion would attach to. Decided on ids, so evaluation (token arrays) and prediction
    (text) agree.
    """

    def __init__(self, vocab: Vocab, ok: np.ndarray):
        v = vocab.size
        classes = {"": BLOCK}
        role = np.full(v, BLOCK, dtype=np.int64)  # (V,) each id's class as an anchor (SKIP: look further back)
        # (id, what it attaches to) of restricted ids: a script's name; "" any letter (a mark without a script);
        # "*" a letter or a symbol (joiners); "S" a symbol (variation selectors: emoji presentation)
        wants: list[tuple[int, str]] = []
        for i, c in enumerate(vocab.chars):
            if vocab.is_special(i):
                continue
            cat, cp = unicodedata.category(c), ord(c)
            if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF:
                role[i] = SKIP
                wants.append((i, "S"))
            elif c in JOINERS:
                role[i] = SKIP
                wants.append((i, "*"))
            elif cat in MARKS:
                script = "" if unicodedata.name(c, "COMBINING").startswith("COMBINING") else _script(c)
                if script:
                    role[i] = classes.setdefault(script, len(classes) + 1)
                else:
                    role[i] = SKIP
                wants.append((i, script))
            elif cat[0] == "L":
                role[i] = classes.setdefault(_script(c), len(classes) + 1) if _script(c) else BLOCK
            elif cat[0] == "S":
                role[i] = SYMBOL
        n_classes = max(classes.values()) + 1
        allowed = np.tile(np.asarray(ok, dtype=bool), (n_classes, 1))  # (C, V)
        for i, script in wants:
            allowed[:, i] = False
            if script in ("*", "S"):
                allowed[SYMBOL, i] = ok[i]
                if script == "*":
                    allowed[SYMBOL + 1:, i] = ok[i]
            elif script == "":
                allowed[SYMBOL + 1:, i] = ok[i]
            elif script in classes:
                allowed[classes[script], i] = ok[i]
        self.role, self.allowed = role, allowed
        self.start_id = vocab.stoi[START]

    def anchor(self, history: np.ndarray) -> int:
        """The class of the character a suggestion after history (H,) would attach to."""
        j, stop = len(history) - 1, max(-1, len(history) - 1 - LOOKBACK)
        while j > stop:
            r = int(self.role[history[j]])
            if r != SKIP:
                return r
            j -= 1
        return BLOCK  # the start of the text (START), or only transparent characters within reach

    def rows(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Boolean masks (N, V) of what may be suggested after each history: the base mask less the marks that
        cannot attach."""
        last = np.array([h[-1] if len(h) else self.start_id for h in histories], dtype=np.int64)  # (N,)
        cls = self.role[last]  # (N,)
        for r in np.flatnonzero(cls == SKIP).tolist():
            cls[r] = self.anchor(histories[r])
        return self.allowed[cls]  # (N, V)

    def floor(self) -> int:
        """How many ids may be suggested after every history (the smallest row count)."""
        return int(self.allowed.sum(axis=1).min())


def top_ids(probs: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    """The k most likely ids with ok[id] (N, k) per row of probabilities (N, V), best first.

    ok is a mask (V,) for every row, or one per row (N, V). Equal probabilities go to the lower id (a stable
    sort's order); k is capped at the most suggestible ids of a row, and a row with fewer has -1 in its last
    places.
    """
    k = check_int(k, "k")
    counts = ok.sum(axis=-1)  # () or (N,)
    k = min(k, int(np.max(counts))) if np.size(counts) else min(k, ok.shape[-1])
    p = np.where(ok, probs, -1.0)  # (N, V)
    if k <= 8:
        # k argmax passes are linear in V where a sort is not; argmax picks the first (lowest) of equal ids,
        # the order of a stable sort.
        top = np.empty((len(p), k), dtype=np.int64)
        rows = np.arange(len(p))
        for j in range(k):
            top[:, j] = p.argmax(axis=1)
            p[rows, top[:, j]] = -2.0  # below every probability: never picked again
    else:
        top = np.argsort(-p, axis=1, kind="stable")[:, :k]  # (N, k)
    if ok.ndim == 2 and (counts < k).any():
        top[np.arange(k)[None, :] >= counts[:, None]] = -1  # (N, k) past a row's suggestible ids
    return top


def rank(probs: np.ndarray, ok: np.ndarray, chars: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The k most likely ids with ok[id] per row of (N, V) probabilities as (char, prob), best first.

    ok: a mask (V,), or one per row (N, V) (AttachRule.rows); a row with fewer suggestible ids has fewer pairs.
    """
    top = top_ids(probs, ok, k)  # (N, k)
    vals = np.take_along_axis(probs, np.maximum(top, 0), axis=1)  # (N, k)
    # Tens of thousands of new lists would set off full garbage collections over every object of torch and
    # onnxruntime (up to half a second in file mode); none of these can form a cycle.
    paused = gc.isenabled() and len(top) > 1000
    if paused:
        gc.disable()
    try:
        return [[(chars[j], q) for j, q in zip(ids, qs) if j >= 0] for ids, qs in zip(top.tolist(), vals.tolist())]
    finally:
        if paused:
            gc.enable()


# -- the contract --------------------------------------------------------------------------------------------


class Predictor:
    """Next-character distributions behind one contract; a backend implements `logprobs` (and may cache).

    Construction is shared (`__init__`): a backend passes its vocabulary, the longest window it reads
    (`context`, ids including START) and a name. The public incremental interface is start / feed / truncate:
    the base class gives every backend a correct one (the state is the ids read so far and each feed computes
    the distribution afresh); backends with a key/value cache override the three and set `incremental`.
    """

    incremental = False  # feed() reuses work (a key/value cache) instead of recomputing the window
    stride = 1  # ids a windowed backend's window jumps by (see window_start); 1 for every other backend

    def __init__(self, vocab: Vocab, context: int, run_id: str = ""):
        self.vocab = vocab
        self.context = int(context)  # the longest window (ids, START included) this backend reads
        self.run_id = run_id
        self.start_id = vocab.stoi[START]
        self._ok: np.ndarray | None = None
        self._attach: AttachRule | None = None

    # -- what a backend implements ---------------------------------------------------------------------------
    def logprobs(self, contexts: list[np.ndarray]) -> np.ndarray:
        """Natural-log next-id distributions (N, V) after each history (ids of a prefix, START implied)."""
        raise NotImplementedError

    def windowed(self, stride: int) -> Predictor:
        """This predictor with another typing window stride (shares the model). Backends without a window: self."""
        return self

    # -- the incremental interface ------------------------------------------------------------------------
    def start(self) -> State:
        """The state of an empty history (only the paragraph start read)."""
        return np.zeros(0, dtype=np.int64)

    def feed(self, state: State, ids: np.ndarray) -> tuple[State, np.ndarray]:
        """(state after also reading ids (T,), T >= 0; logprobs (V,) after everything read). `state` is unchanged."""
        history = np.concatenate([state, np.asarray(ids, dtype=np.int64)]) if len(ids) else state
        return history, self.logprobs([history])[0]

    def truncate(self, state: State, n: int) -> State:
        """The state after only the first n ids it has read (a new object; `state` is unchanged)."""
        return state[:n]

    def feed_many(self, states: list[State], ids: np.ndarray) -> tuple[list[State], np.ndarray]:
        """One id per state: (the states after also reading ids[i] (N,), logprobs (N, V)); `states` are unchanged.

        What a beam search needs (word completion extends every hypothesis by one id per step). This default
        feeds them one by one; backends with a key/value cache batch the N steps into one forward pass.
        """
        out, rows = [], []
        for st, i in zip(states, np.asarray(ids, dtype=np.int64).tolist()):
            st, lp = self.feed(st, np.array([i], dtype=np.int64))
            out.append(st)
            rows.append(lp)
        return out, (np.stack(rows) if rows else np.zeros((0, self.vocab.size), dtype=np.float32))

    def work(self, state: State) -> tuple[int, int]:
        """(windows computed from their start, ids run through the network) to reach this state; 0s if uncached."""
        return 0, 0

    # -- the rest, shared by every backend --------------------------------------------------------------------
    def encode(self, prefix: str) -> np.ndarray:
        """The history (H,) of a prefix: the one way text enters the engine (`prepare_prefix`, then the vocabulary)."""
        return self.vocab.encode(prepare_prefix(prefix)).astype(np.int64)

    def suggestible(self) -> np.ndarray:
        """Boolean mask (V,) of ids that may ever be suggested (see suggestible_mask)."""
        if self._ok is None:
            self._ok = suggestible_mask(self.vocab)
        return self._ok

    def attach_rule(self) -> AttachRule:
        """The rule that keeps marks where they can attach (see AttachRule), built once per predictor."""
        if self._attach is None:
            self._attach = AttachRule(self.vocab, self.suggestible())
        return self._attach

    def suggestible_after(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Boolean masks (N, V) of the ids that may be suggested after each history: suggestible() less the marks
        that cannot attach to what the history ends with (AttachRule). What every ranking uses."""
        return self.attach_rule().rows(histories)

    def unknown_share(self, prefix: str) -> float:
        """The share of the last UNKNOWN_WINDOW characters of prefix (as prepare_prefix reads it) that the
        vocabulary lacks: at MOSTLY_UNKNOWN or more the context is mostly outside what the model knows (another
        script or language) and its suggestions are guesses; a caller may fall back to something else."""
        return unknown_share(self.encode(prefix))

    def dist(self, prefixes: list[str]) -> np.ndarray:
        """Probabilities (N, V) of the next id after each prefix."""
        prefixes = check_texts(prefixes, "prefixes")
        if not prefixes:
            return np.zeros((0, self.vocab.size))
        return np.concatenate([np.exp(self.logprobs([self.encode(p) for p in prefixes[i:i + CHUNK]]))
                               for i in range(0, len(prefixes), CHUNK)])

    def topk_batch(self, prefixes: list[str], k: int = 3, batch_size: int = 512,
                   stride: int | None = None) -> list[list[tuple[str, float]]]:
        """The k most likely distinct suggestible characters with probabilities, best first, per prefix.

        `stride` reads every prefix through the window a typing `Session` with that stride shows (default: this
        predictor's own; a backend without a window takes any). batch_size is a floor on prefixes per logprobs
        call (at least CHUNK and at most MAX_CHUNK go together, so windows of a typing trace can share a forward
        pass). k is capped at the characters that may follow a prefix. Raises UserError naming the argument for
        prefixes that are not a list of strings, k, batch_size or stride below 1 or not whole numbers, a stride
        past a windowed model's context.
        """
        prefixes = check_texts(prefixes, "prefixes")
        k = check_int(k, "k")
        batch_size = check_int(batch_size, "batch_size")
        pred = self if stride is None else self.windowed(check_int(stride, "stride"))
        out: list[list[tuple[str, float]]] = []
        chunk = min(max(batch_size, CHUNK), MAX_CHUNK)
        for i in range(0, len(prefixes), chunk):
            hist = [self.encode(p) for p in prefixes[i:i + chunk]]
            lp = pred.logprobs(hist)  # (n, V)
            out.extend(rank(np.exp(lp), self.suggestible_after(hist), self.vocab.chars, k))
        return out

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """topk_batch of one prefix."""
        return self.topk_batch([check_text(prefix, "prefix")], k)[0]

    def session(self, stride: int | None = None) -> Session:
        """A new typing session (one user's incremental state); `stride` as in topk_batch."""
        return Session(self if stride is None else self.windowed(check_int(stride, "stride")))

    def _with(self, **changes) -> Predictor:
        """A shallow copy with some attributes changed (sharing the model)."""
        other = copy.copy(self)
        other.__dict__.update(changes)
        return other


class Session:
    """One typing session: per keystroke the predictor reads only what changed since the last prefix.

    Each prefix's history is compared with the one read before: the state is truncated to their common part
    (a backspace or an edit) and fed the rest, so the answers are exactly those of `Predictor.topk_batch` of the
    whole prefix (within float rounding) while a backend with a cache recomputes only when its window moves
    (see window_start). Holds one user's state: create one per typing session, never share one between users or
    threads.
    """

    def __init__(self, pred: Predictor):
        self.pred = pred
        self.reset()

    @property
    def stride(self) -> int:
        return self.pred.stride

    @property
    def recomputes(self) -> int:
        """Windows computed from their start so far (first keystroke, window jumps, edits before the window)."""
        return self.pred.work(self._state)[0]

    @property
    def fed(self) -> int:
        """Ids run through the network so far."""
        return self.pred.work(self._state)[1]

    def reset(self) -> None:
        self._state = self.pred.start()
        self._ids = np.zeros(0, dtype=np.int64)  # the history the state has read
        self._last: np.ndarray | None = None  # logprobs (V,) after _ids

    def logprobs(self, prefix: str) -> np.ndarray:
        """Natural-log distribution (V,) of the next id after prefix."""
        ids = self.pred.encode(prefix)
        old = self._ids
        n = min(len(old), len(ids))
        diff = np.flatnonzero(old[:n] != ids[:n])
        j = int(diff[0]) if len(diff) else n  # ids the old and new history share
        if j == len(old) == len(ids) and self._last is not None:
            return self._last.copy()
        # A truncated copy or the state itself (never changed in place): if feeding fails, the session still
        # holds its last consistent state.
        state = self._state if j == len(old) else self.pred.truncate(self._state, j)
        state, lp = self.pred.feed(state, ids[j:])
        self._state, self._ids, self._last = state, ids, lp
        return lp.copy()

    def dist(self, prefix: str) -> np.ndarray:
        return np.exp(self.logprobs(prefix))

    def topk(self, prefix: str, k: int = 3) -> list[tuple[str, float]]:
        """What Predictor.topk shows for this prefix, computed incrementally."""
        k = check_int(k, "k")
        probs = self.dist(prefix)[None]  # (1, V)
        return rank(probs, self.pred.suggestible_after([self._ids]), self.pred.vocab.chars, k)[0]

    def unknown_share(self, prefix: str) -> float:
        """Predictor.unknown_share of this prefix."""
        return self.pred.unknown_share(prefix)
