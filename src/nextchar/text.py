"""Text as the models read it: the one normalization of training text (corpus.prepare) and of typed prefixes.

Two layers, both shared:
- `clean` (character level): line breaks CRLF, CR, NEL, U+2028, U+2029 -> "\\n"; C1 controls read as Windows-1252;
  other non-whitespace controls and every U+FEFF dropped; runs of combining marks capped at MAX_MARKS; NFC.
- whitespace: `paragraphs` for a corpus file (blank lines separate paragraphs, every other whitespace run is one
  space, paragraphs joined by one "\\n"), `prefix_form` for typed text (below).

A typed prefix (`prefix_form`) is read as a corpus file in which every line break is a paragraph break, except
that its end is kept: a whitespace run holding a line break becomes one "\\n" (a typed Enter is a deliberate
break), any other whitespace run one space; leading whitespace is dropped (a paragraph never starts with one,
and the start of a text is a paragraph start). So "Hello\\r" and "Hello\\r\\n" both read "Hello\\n", a trailing tab
or run of spaces reads as one space, and "cafe\\u0301" reads "caf\\u00e9". Time is linear in the length of the text
(the mark cap bounds NFC's reordering per character); text that is already in this form (ASCII or NFC, single
spaces, no controls or special whitespace) is recognized by a few C-speed checks and returned as it is.
Imports only the standard library: every prediction runs it.
"""

from __future__ import annotations

import functools
import re
import unicodedata

NEWLINES = re.compile("\r\n?|[\x85\u2028\u2029]")
BLANK_LINE = re.compile(r"\n\s*\n")  # \s is Unicode whitespace, the same set str.split() and str.isspace() use
# Control characters that are not whitespace, C1 (U+0080-U+009F) and stray BOMs/ZWNBSPs (e.g. left where files
# were concatenated). Whitespace controls (\t, \x0b, \x0c, \x1c-\x1f) are left to the whitespace rules.
CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x9f\ufeff]")
SPACES = re.compile(r"\s+")
_ODD_SPACE = re.compile(r"[^\S ]|  ")  # whitespace that is not a single space: what SPACES has work for

# Unicode's Stream-Safe Text Format (UAX #15, section 13) bounds a run of non-starters at 30: no real text needs
# more, and NFC sorts each run by combining class in time quadratic in its length (CPython's NFC took 78 s on one
# 640 KB line alternating U+0301/U+0316). Longer runs ("Zalgo" text, corrupt files) keep their first MAX_MARKS.
MAX_MARKS = 30
# Only text with a run of more than MAX_MARKS non-ASCII characters can hold a run of marks that long: the cheap
# test that spares ordinary text the mark table.
_LONG_NON_ASCII = re.compile(f"[^\\x00-\\x7f]{{{MAX_MARKS + 1},}}")


def _control_fixes() -> dict[str, str]:
    # C1 controls in "UTF-8" text are nearly always Windows-1252 bytes decoded as Latin-1 (the Dasher French text
    # has 990 U+0092 for the apostrophe), so map them back; everything else that matched is dropped.
    fixes = {}
    for cp in range(0x80, 0xA0):
        try:
            fixes[chr(cp)] = bytes([cp]).decode("cp1252")
        except UnicodeDecodeError:
            pass
    return fixes


CONTROL_FIXES = _control_fixes()


def _fix_control(m: re.Match) -> str:
    return CONTROL_FIXES.get(m.group(), "")


def is_mark(c: str) -> bool:
    """Whether NFC may reorder c among its neighbours: a non-zero combining class, or (U+0F73, U+0F75, U+0F81) a
    canonical decomposition into non-starters only."""
    if unicodedata.combining(c):
        return True
    if unicodedata.category(c)[0] != "M" or unicodedata.decomposition(c)[:1] in ("", "<"):
        return False
    return all(unicodedata.combining(x) for x in unicodedata.normalize("NFD", c))


@functools.cache
def _mark_table():
    """(0x110000,) numpy bool: is_mark of every code point, built once (~0.05 s) from this Python's Unicode tables."""
    import numpy as np  # only text that may hold a long run of marks gets here

    table = np.zeros(0x110000, dtype=bool)
    # Marks live in planes 0 and 1 from U+0300 on (planes 2-3 are ideographs, 4-13 unassigned, 14's variation
    # selectors have combining class 0, 15-16 private use).
    table[[cp for cp in range(0x300, 0x20000) if is_mark(chr(cp))]] = True
    return table


def code_points(text: str):
    """The code points (len(text),) of text as a numpy uint32 array (lone surrogates included)."""
    import numpy as np

    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def mark_runs(cps):
    """(starts, ends) of the maximal runs of marks in code points cps (n,), each (runs,), ends exclusive."""
    import numpy as np

    edges = np.flatnonzero(np.diff(np.r_[False, _mark_table()[cps], False]))  # run starts and ends, alternating
    return edges[0::2], edges[1::2]


def cap_marks(text: str, run: int = 0) -> tuple[str, int]:
    """text with every run of marks (is_mark) cut to its first MAX_MARKS, and the number of marks the result ends
    with (<= MAX_MARKS). run: the marks the text before this one ended with; capping the pieces of a text in order,
    passing run along, equals capping the whole (prepare streams its files). Linear time; text without a run of
    more than MAX_MARKS non-ASCII characters (nearly all text) skips the mark table."""
    if text.isascii():
        return text, run if not text else 0  # (an empty piece leaves the run going)
    if run == 0 and not _LONG_NON_ASCII.search(text):  # no run of marks can pass the cap
        tail = 0
        while tail < len(text) and is_mark(text[-1 - tail]):
            tail += 1
        return text, tail
    import numpy as np

    cps = code_points(text)  # (n,)
    starts, ends = mark_runs(cps)
    if not len(starts):
        return text, 0
    budget = np.full(len(starts), MAX_MARKS)  # (runs,) marks each run may keep
    if starts[0] == 0:
        budget[0] = max(0, MAX_MARKS - run)  # the leading marks continue the previous piece's run
    over = np.flatnonzero(ends - starts > budget)
    if len(over):
        keep = np.ones(len(cps), dtype=bool)  # (n,)
        for i in over.tolist():
            keep[starts[i] + budget[i]:ends[i]] = False
        text = cps[keep].tobytes().decode("utf-32-le", "surrogatepass")
    if ends[-1] != len(cps):
        return text, 0
    tail = int(min(ends[-1] - starts[-1], budget[-1]))
    return text, tail + (run if starts[-1] == 0 else 0)


def clean(text: str, run: int = 0) -> tuple[str, int]:
    """The character-level steps of normalization (see the module docstring), whitespace left as it is; and the
    marks the result ends with before NFC (cap_marks' run: pass it to the next piece of the same text)."""
    text = NEWLINES.sub("\n", text)  # before the C1 fix-up: U+0085 is NEL here, not "..."
    text = CONTROLS.sub(_fix_control, text)
    text, run = cap_marks(text, run)  # after the control deletions: they must not hide a run from the cap
    return unicodedata.normalize("NFC", text), run


def paragraphs(text: str) -> str:
    """A cleaned corpus text's whitespace rules: paragraphs (split at blank lines) with one space per whitespace
    run, joined by one "\\n"; empty paragraphs dropped."""
    return "\n".join(p for p in (" ".join(q.split()) for q in BLANK_LINE.split(text)) if p)


def _space(m: re.Match) -> str:
    return "\n" if "\n" in m.group() else " "


def is_prefix_form(text: str) -> bool:
    """Whether prefix_form(text) == text, by C-speed checks that accept all ordinary typed text (a False may be
    a text that is in the form after all, never the reverse)."""
    if not text.isprintable() or "  " in text or text.startswith(" "):
        return False  # isprintable() is False for every control, format character and whitespace but " "
    if text.isascii():
        return True
    return unicodedata.is_normalized("NFC", text) and not _LONG_NON_ASCII.search(text)


def prefix_form(text: str) -> str:
    """What a typed prefix stands for, in the form the models were trained on (see the module docstring).

    prefix_form(prefix_form(t)) == prefix_form(t). For a text without line breaks and without trailing
    whitespace it is what `prepare` makes of a file holding that text.
    """
    if is_prefix_form(text):
        return text
    text = clean(text)[0]
    if _ODD_SPACE.search(text):
        text = SPACES.sub(_space, text)
    return text.lstrip()
