"""Keystroke savings (KS) of nextchar's word completion, side by side with Presage, simulating a perfect user.

    PYTHONPATH=src python benchmarks/keystroke_savings.py --data data/dasher --langs en de es --slots 3 \\
        [--chars 5000] [--run RUN] [--presage-langs en de es] [--json out.json]

Each language's test text (its first N characters, the same text for every system) is typed from an empty text
box by a perfect user. At each point the system offers `--slots` word completions (nextchar also offers 3 next
characters). If a completion's text is what comes next in the text and ends where the word ends (the next
character is not a letter, mark or digit, or the text ends), the user selects the longest such completion: one
keystroke, which types the rest of the word and a space; a punctuation mark or line break typed right after takes
that space's place (as phone keyboards do), so the space counts as typed only when the text has one there.
Otherwise the user types the next character: one keystroke. Completions never include the empty rest.
KS = 1 - keystrokes / characters (higher is better); keystrokes per character = 1 - KS.

nextchar: `Completer` (nextchar.complete, the word rule in its docstring) plus a typing `Session` for the 3 next
characters; "chars top-3" is how often the next character was among those 3 at the prediction points.

Presage (Debian's `presage` 0.9.1, driven through its `presage_demo_text` tool in a subprocess): its n-gram
database is built with its `text2ngram` tool (orders 1-3, lower-cased, as its documentation does) from the SAME
training split, decoded to text; the configuration is its default smoothed n-gram predictor alone (DELTAS
0.01 0.1 0.89, LEARN false), online learning off, lower-case mode on and repeated suggestions off as in its
default configuration, 3 suggestions. Its suggestions are whole words; the completion is the suggestion past
the word part Presage is completing (its context's last token, compared case-insensitively as its lower-case
mode does). Line breaks reach Presage as spaces (its tool reads lines; both are blank space to its tokenizer).
Without Presage installed the Presage columns are skipped with a message saying how to install it.

`--adapt` adds "nextchar+cache": the same with the server's per-session adaptation (nextchar.adapt), whose cache
model reads the text typed so far; Presage's counterpart, online learning, stays off (0.9.1 aborts with it on).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nextchar import engine
from nextchar.adapt import AdaptiveSession
from nextchar.complete import Completer, CompletionConfig, current_word, is_word_char
from nextchar.data import open_data
from nextchar.engine import Predictor

INSTALL_HINT = "install it with: apt-get install presage libpresage-data (Debian/Ubuntu, as root)"


@dataclass
class Result:
    system: str
    lang: str
    chars: int  # characters of text typed
    keystrokes: int
    predictions: int  # times the system was asked
    seconds: float  # time spent in the system's predictions
    accepted: int  # completions selected
    char_hits: int = 0  # predictions whose next character was among the 3 character suggestions
    char_asked: int = 0

    @property
    def ks(self) -> float:
        return 1.0 - self.keystrokes / self.chars

    @property
    def ms(self) -> float:
        return 1e3 * self.seconds / max(1, self.predictions)


def accept(text: str, pos: int, rests: list[str]) -> str:
    """The longest offered rest that the text continues with and that ends where the word ends ('' if none)."""
    best = ""
    for r in rests:
        end = pos + len(r)
        if len(r) > len(best) and text.startswith(r, pos) and (end == len(text) or not is_word_char(text[end])):
            best = r
    return best


def simulate(text: str, system, lang: str) -> Result:
    """A perfect user types text with `system(prefix) -> (rests, chars or None)`; see the module docstring."""
    res = Result(system.name, lang, len(text), 0, 0, 0.0, 0)
    pos = 0
    while pos < len(text):
        t = time.perf_counter()
        rests, chars = system(text[:pos])
        res.seconds += time.perf_counter() - t
        res.predictions += 1
        if chars is not None:
            res.char_asked += 1
            res.char_hits += text[pos] in chars
        res.keystrokes += 1
        r = accept(text, pos, rests)
        if r:
            res.accepted += 1
            pos += len(r)
            if pos < len(text) and text[pos] == " ":
                pos += 1  # the space typed with the completion
        else:
            pos += 1
    return res


class Nextchar:
    """3 completions (a Completer kept for the whole text, as in a typing session) and 3 next characters."""

    def __init__(self, pred: Predictor, slots: int, config: CompletionConfig, no_repeat: bool = True,
                 adapt: bool = False):
        self.name = "nextchar+cache" if adapt else "nextchar"
        self.pred, self.slots = pred, slots
        self.completer = Completer(pred, config)
        self.session = pred.session()
        # the server's per-user adaptation: a cache model of what this user typed (here: the text so far)
        self.adaptive = AdaptiveSession(pred) if adapt else None
        self.no_repeat = no_repeat
        self.word_start, self.shown = None, set()

    def __call__(self, prefix: str) -> tuple[list[str], list[str]]:
        word = current_word(prefix)
        start = prefix[:len(prefix) - len(word)]
        if start != self.word_start:  # a new word: what was shown for the last one may be shown again
            self.word_start, self.shown = start, set()
        # words already shown for this word and not taken are not shown again (Presage's default selector)
        exclude = {w[len(word):] for w in self.shown if w.startswith(word)} if self.no_repeat else ()
        rests = [s for s, _ in self.completer.complete(prefix, self.slots, self.adaptive, exclude)]
        self.shown.update(word + r for r in rests)
        chars = [c for c, _ in (self.adaptive or self.session).topk(prefix, 3)]
        return rests, chars


# ------------------------------------------------------------------------------------------ Presage

PRESAGE_BLANKS = " \f\n\r\t\v"
PRESAGE_SEPARATORS = string.punctuation  # its tokenizer's default separators: ASCII punctuation
CONFIG = """<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<Presage>
  <PredictorRegistry><LOGGER>ERROR</LOGGER><PREDICTORS>DefaultSmoothedNgramPredictor</PREDICTORS></PredictorRegistry>
  <ContextTracker><LOGGER>ERROR</LOGGER><SLIDING_WINDOW_SIZE>80</SLIDING_WINDOW_SIZE>
    <LOWERCASE_MODE>yes</LOWERCASE_MODE><ONLINE_LEARNING>no</ONLINE_LEARNING></ContextTracker>
  <Selector><LOGGER>ERROR</LOGGER><SUGGESTIONS>{slots}</SUGGESTIONS><REPEAT_SUGGESTIONS>no</REPEAT_SUGGESTIONS>
    <GREEDY_SUGGESTION_THRESHOLD>0</GREEDY_SUGGESTION_THRESHOLD></Selector>
  <PredictorActivator><LOGGER>ERROR</LOGGER><PREDICT_TIME>1000</PREDICT_TIME>
    <MAX_PARTIAL_PREDICTION_SIZE>60</MAX_PARTIAL_PREDICTION_SIZE><COMBINATION_POLICY>Meritocracy</COMBINATION_POLICY>
  </PredictorActivator>
  <ProfileManager><LOGGER>ERROR</LOGGER><AUTOPERSIST>false</AUTOPERSIST></ProfileManager>
  <Predictors>
    <DefaultSmoothedNgramPredictor><PREDICTOR>SmoothedNgramPredictor</PREDICTOR><LOGGER>ERROR</LOGGER>
      <DBFILENAME>{db}</DBFILENAME><DELTAS>0.01 0.1 0.89</DELTAS><LEARN>false</LEARN>
      <DatabaseConnector><LOGGER>ERROR</LOGGER></DatabaseConnector></DefaultSmoothedNgramPredictor>
  </Predictors>
</Presage>
"""


def presage_missing() -> str | None:
    """Why Presage cannot run here, or None."""
    missing = [t for t in ("presage_demo_text", "text2ngram") if shutil.which(t) is None]
    return f"Presage skipped: {', '.join(missing)} not found; {INSTALL_HINT}" if missing else None


def build_presage_db(ds, lang: str, folder: Path) -> Path:
    """Presage's n-gram database (orders 1-3, lower-cased) from the training split; built once per data set."""
    db = folder / f"{ds.vocab.hash}-{lang}.db"
    if db.exists():
        return db
    folder.mkdir(parents=True, exist_ok=True)
    txt = folder / f"{ds.vocab.hash}-{lang}-train.txt"
    txt.write_text(ds.text(lang, "train"), encoding="utf-8")
    tmp = db.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    for n in (1, 2, 3):
        cmd = ["text2ngram", "-n", str(n), "-l", "-f", "sqlite", *(["-a"] if n > 1 else []), "-o", str(tmp), str(txt)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp.rename(db)
    return db


class Presage:
    """presage_demo_text in a subprocess: each line we send is appended to its context and answered with its
    suggestions, so the context grows exactly as the simulated text box does."""

    LINE = 79  # the tool reads lines into an 80-byte buffer

    def __init__(self, db: Path, slots: int, folder: Path):
        self.name = "presage"
        cfg = folder / f"{db.stem}-{slots}.xml"
        cfg.write_text(CONFIG.format(slots=slots, db=db), encoding="utf-8")
        self.proc = subprocess.Popen(["presage_demo_text", "-c", str(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.sent = ""  # the text Presage has as its context
        self.pending: list[str] = []
        self._last: list[str] | None = None

    def close(self) -> None:
        self.proc.kill()  # at the end of its input the tool loops forever: it never exits on its own
        self.proc.wait()

    def _ask(self, line: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        words, prompted = [], False
        while True:
            raw = self.proc.stdout.readline()
            if not raw:
                raise RuntimeError("presage_demo_text stopped")
            s = raw.decode("utf-8", errors="replace").rstrip("\n")
            if not prompted:  # the banner, or the previous answer's "-- Context changed", precede the prompt
                if not s.startswith("> "):
                    continue
                prompted, s = True, s[2:]
            if s.startswith("-- Context: "):
                return words
            words.append(s)

    def _send(self, delta: str) -> list[str]:
        delta = delta.replace("\n", " ")
        pieces, cur = [], ""
        for ch in delta:  # whole characters, at most LINE bytes a line
            if len((cur + ch).encode("utf-8")) > self.LINE:
                pieces.append(cur)
                cur = ""
            cur += ch
        pieces.append(cur)
        for p in pieces:
            out = self._ask(p)
        return out

    def __call__(self, prefix: str) -> tuple[list[str], None]:
        if not prefix.startswith(self.sent):
            raise RuntimeError("the simulated text only grows")
        words = self._send(prefix[len(self.sent):])
        self.sent = prefix
        i = len(prefix)
        while i > 0 and prefix[i - 1] not in PRESAGE_BLANKS and prefix[i - 1] not in PRESAGE_SEPARATORS:
            i -= 1
        token = prefix[i:].lower()
        rests = [w[len(token):] for w in words if w[:len(token)].lower() == token and len(w) > len(token)]
        return rests, None


# ------------------------------------------------------------------------------------------ main


def table(rows: list[Result]) -> str:
    out = ["| language | system | characters | keystrokes | KS | keystrokes/char | ms/prediction | chars top-3 |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        hit = f"{100 * r.char_hits / r.char_asked:.1f}%" if r.char_asked else ""
        out.append(f"| {r.lang} | {r.system} | {r.chars:,} | {r.keystrokes:,} | {100 * r.ks:.1f}% | "
                   f"{1 - r.ks:.3f} | {r.ms:.2f} | {hit} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/dasher")
    ap.add_argument("--langs", nargs="+", default=None, help="languages (default: all in the data)")
    ap.add_argument("--slots", type=int, default=3, help="word completions offered at once")
    ap.add_argument("--chars", type=int, default=5000, help="characters of each test text (0: all)")
    ap.add_argument("--run", default=None, help="run or model folder (default: the shipped model)")
    ap.add_argument("--presage-langs", nargs="*", default=["en", "de", "es"],
                    help="languages to run Presage on too (none: skip it; 'all': every language)")
    ap.add_argument("--presage-dir", default="/tmp/nextchar-presage", help="where Presage databases are built")
    ap.add_argument("--beam", type=int, default=CompletionConfig.beam)
    ap.add_argument("--length-weight", type=float, default=CompletionConfig.length_weight)
    ap.add_argument("--pool", type=int, default=CompletionConfig.pool)
    ap.add_argument("--split", default="test", help="test (the table) or dev (for tuning the search)")
    ap.add_argument("--repeat", action="store_true", help="nextchar may show a word again that was not taken")
    ap.add_argument("--adapt", action="store_true",
                    help="also run nextchar with the server's per-session cache model over the text typed so far")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run is None:
        from nextchar.models import default_model

        args.run = str(default_model())
    ds = open_data(args.data)
    langs = args.langs or ds.languages
    plangs = ds.languages if args.presage_langs == ["all"] else [x for x in args.presage_langs if x in langs]
    why = presage_missing() if plangs else None
    if why:
        print(why, file=sys.stderr)
        plangs = []
    pred = engine.load(args.run)
    cfg = CompletionConfig(beam=args.beam, length_weight=args.length_weight, pool=args.pool)
    print(f"model {pred.run_id} ({args.run}), {cfg}, {args.slots} slots, "
          f"first {args.chars or 'all'} {args.split} characters per language", flush=True)
    rows: list[Result] = []
    t0 = time.perf_counter()
    for lang in langs:
        text = ds.text(lang, args.split)
        text = text[:args.chars] if args.chars else text
        rows.append(simulate(text, Nextchar(pred, args.slots, cfg, not args.repeat), lang))
        if args.adapt:
            rows.append(simulate(text, Nextchar(pred, args.slots, cfg, not args.repeat, adapt=True), lang))
        if lang in plangs:
            p = Presage(build_presage_db(ds, lang, Path(args.presage_dir)), args.slots, Path(args.presage_dir))
            try:
                rows.append(simulate(text, p, lang))
            finally:
                p.close()
        for r in [r for r in rows if r.lang == lang]:
            print(f"{lang} {r.system:<8} KS {100 * r.ks:5.1f}%  keystrokes {r.keystrokes:6d}/{r.chars}  "
                  f"{r.ms:6.2f} ms/prediction  accepted {r.accepted}"
                  + (f"  chars top-3 {100 * r.char_hits / r.char_asked:.1f}%" if r.char_asked else ""), flush=True)
    print()
    print(table(rows))
    for name in dict.fromkeys(r.system for r in rows):
        ours = [r for r in rows if r.system == name]
        print(f"{name} mean KS over {len(ours)} languages: {100 * sum(r.ks for r in ours) / len(ours):.1f}%")
    print(f"took {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json + ".tmp", "w", encoding="utf-8") as f:
            json.dump([asdict(r) | {"ks": r.ks, "ms": r.ms} for r in rows], f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main(sys.argv[1:])
