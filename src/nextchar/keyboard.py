"""The web keyboard's keys: the model's characters grouped by script, each group ordered by estimated frequency."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nextchar.engine import Predictor

# How frequent a character is in text is estimated from the model alone (a run keeps no character counts).
# Per script: (1) the first-order chain p(c | b) over the script's letters only (rows renormalized) picks the
# TOP most frequent letters; (2) the second-order chain over those and the space, whose step from (a, b) to
# (b, c) is the model's p(c | a b) renormalized, gives the stationary distribution of letter pairs, i.e. of an
# endless text the model would write in that script; (3) every character's frequency is its probability of
# coming next after those pairs (the same rows over the whole vocabulary), which orders the letters, decides
# the main or "more" pane and orders the symbols. The pair chain costs TOP^2 model rows per script, so it
# runs on the top letters only. With the shipped default model: Latin "e a r i n o d l s t m u g ..." (its 18
# Latin-script languages mixed), Cyrillic "а о т е и р н м л в с у п", Greek "ο ι ν α ε η τ σ"; the
# first-order chain alone put "t" and "h" after "j", "k" and "z" (a one-letter context looks like the start
# of a text).
TOP = 16  # letters per script that the pair chain orders
MIN_SCRIPT = 3  # fewer letters than this do not make a keyboard of their own (e.g. "ª", "µ")
MAIN_SHARE = 0.004  # an accented letter or a mark is on the main pane from this share of its script's letters
RARE_SHARE = 5e-4  # below this share even a base letter waits on the "more" pane
PUNCTUATION = 5  # symbols on the main pane's last row
JOINERS = ("\u200c", "\u200d")  # zero-width non-joiner and joiner: typed inside words (nextchar.complete)
ITERATIONS = 200  # power iterations; the chains mix within a few dozen


@dataclass(frozen=True)
class ScriptKeys:
    """One script's keys, most frequent first; case pairs appear once, in lower case (Shift gives the other)."""

    script: str  # the Unicode script, as the first word of its letters' names ("Latin", "Cyrillic", "Bengali")
    letters: list[str]  # the main pane: base letters, and accented letters and marks of MAIN_SHARE or more
    more: list[str]  # the script's rarer letters and marks
    punctuation: list[str]  # the PUNCTUATION symbols that most often follow this script's letters
    symbols: list[str]  # digits (families most used after this script first, each 0-9), then other symbols


def script_of(ch: str) -> str | None:
    """The script of a letter or mark from its Unicode name ("LATIN SMALL LETTER A" -> "Latin"), else None.

    Python has no Unicode Script property; the first word of the name is the script for the letters of every
    alphabet the models know. Combining diacritics (Inherited) and symbols have none.
    """
    if unicodedata.category(ch)[0] not in "LM":
        return None
    word = unicodedata.name(ch, "").split(" ")[0]
    if not word or word == "COMBINING":
        return None
    return "Han" if word == "CJK" else word.title()


def _stationary(P: np.ndarray) -> np.ndarray:
    """The stationary distribution of a row-stochastic (N, N) matrix by power iteration from uniform."""
    pi = np.full(len(P), 1.0 / len(P))  # (N,)
    for _ in range(ITERATIONS):
        pi = pi @ P
    return pi / pi.sum()


def _restrict(rows: np.ndarray, cols: list[int]) -> np.ndarray:
    """Rows (N, V) kept at cols and renormalized: the chain that stays inside one alphabet."""
    sub = rows[:, cols] + 1e-12  # (N, len(cols)); never an all-zero row
    return sub / sub.sum(axis=1, keepdims=True)


def _main_pane(ch: str, share: float) -> bool:
    d = unicodedata.decomposition(ch)
    accented = d != "" and not d.startswith("<")  # a canonical decomposition: a base letter and marks
    return share >= (MAIN_SHARE if accented else RARE_SHARE)


def layout(pred: Predictor) -> list[ScriptKeys]:
    """Every script of the model's vocabulary with its keys; scripts with more letters first.

    Costs one model call of the letters as one-character contexts and one of (TOP + 1)^2 two-character
    contexts per script (1.5 s on one core with the default model, 0.25 s with the tests' tiny one).
    """
    chars = pred.vocab.chars
    stoi = pred.vocab.stoi
    ok = pred.suggestible()
    space = stoi.get(" ")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(chars):
        s = script_of(c) if ok[i] else None
        if s is not None:
            groups.setdefault(s, []).append(i)
    groups = {s: ids for s, ids in groups.items() if len(ids) >= MIN_SCRIPT}
    in_script = {i for ids in groups.values() for i in ids}
    symbols = [i for i, c in enumerate(chars) if ok[i] and i not in in_script and c not in (" ", "\n")]

    # Case pairs appear once: an upper-case letter whose lower case is in the vocabulary is Shift + that key.
    def keyed(i: int) -> bool:
        c = chars[i]
        low = c.lower()
        return not (c != low and len(low) == 1 and low in stoi)

    alphabets = {s: [i for i in ids if keyed(i)] for s, ids in groups.items()}
    # scripts with more letters first: a proxy for how many of the model's languages write in them
    order = sorted(alphabets, key=lambda s: (-len(groups[s]), s))
    used = sorted({i for a in alphabets.values() for i in a})
    first = dict(zip(used, pred.dist([chars[i] for i in used])))  # id -> (V,): p(next | that one letter)
    out = []
    for s in order:
        alpha = alphabets[s]
        p1 = _stationary(_restrict(np.stack([first[i] for i in alpha]), alpha))  # (A,) letters only
        top = [alpha[j] for j in np.argsort(-p1, kind="stable")[:TOP]] + ([space] if space is not None else [])
        n = len(top)
        second = pred.dist([chars[a] + chars[b] for a in top for b in top])  # (T*T, V): p(next | a b)
        P2 = _restrict(second, top).reshape(n, n, n)  # [a, b, c] = p(c | a b) within the alphabet
        if space is not None:
            # no double space: its pair ("  ") carries no memory of the script, and a chain that reaches it
            # drifts to whatever script the model writes most
            P2[:, -1, -1] = 0.0
            P2 /= P2.sum(axis=2, keepdims=True)
        pi2 = np.full((n, n), 1.0 / (n * n))  # (T, T) over pairs (a, b)
        for _ in range(ITERATIONS):
            pi2 = np.einsum("ab,abc->bc", pi2, P2)
        # every character's frequency: how likely it comes next after the chain's pairs (letters outside
        # the top get theirs too, from the same rows)
        after = pi2.reshape(-1) @ second / pi2.sum()  # (V,)
        share = after[alpha] / after[alpha].sum()  # (A,)
        ranked = [alpha[j] for j in np.argsort(-share, kind="stable")]
        main = [chars[i] for i in ranked if _main_pane(chars[i], share[alpha.index(i)])]
        more = [chars[i] for i in ranked if not _main_pane(chars[i], share[alpha.index(i)])]
        out.append(ScriptKeys(s, main, more, *_symbols(chars, symbols, after)))
    return out


def _symbols(chars: list[str], ids: list[int], weight: np.ndarray) -> tuple[list[str], list[str]]:
    """(the PUNCTUATION most used non-digits, all symbols): digit families 0-9 by use, then the rest by use."""
    families: dict[int, list[int]] = {}
    rest = []
    for i in ids:
        c = chars[i]
        if unicodedata.category(c) == "Nd":
            families.setdefault(ord(c) - unicodedata.digit(c), []).append(i)
        else:
            rest.append(i)
    digits = []
    for fam in sorted(families.values(), key=lambda f: -float(weight[f].sum())):
        digits += sorted(fam, key=lambda i: unicodedata.digit(chars[i]))
    rest.sort(key=lambda i: -float(weight[i]))
    # the main pane's row: punctuation, symbols and the zero-width (non-)joiners that Persian and Indic words
    # need, not a variation selector
    top = [chars[i] for i in rest if unicodedata.category(chars[i])[0] in "PS" or chars[i] in JOINERS][:PUNCTUATION]
    return top, [chars[i] for i in digits + rest]


def run_languages(path: str | Path) -> list[str]:
    """The language codes a run (or export) was trained on, from its config.json; [] when it does not say."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    langs = cfg.get("languages") if isinstance(cfg, dict) else None
    if not isinstance(langs, list) and isinstance(cfg, dict) and isinstance(cfg.get("export"), dict):
        langs = cfg["export"].get("languages")
    return [x for x in langs if isinstance(x, str)] if isinstance(langs, list) else []


def as_json(keys: list[ScriptKeys]) -> list[dict]:
    return [asdict(k) for k in keys]
