"""Corpus sources (Dasher training texts or a folder of <lang>.txt), normalization, splits, and prepare()."""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from nextchar import safefs
from nextchar.data import SPLITS
from nextchar.errors import UserError, check_int
from nextchar.text import CONTROLS as _CONTROLS
from nextchar.text import MAX_MARKS, code_points, mark_runs, paragraphs
from nextchar.text import clean as _clean
from nextchar.vocab import UNK, Vocab

log = logging.getLogger(__name__)

# label -> the part of usr/share/dasher/training_<name>.txt in Debian's dasher-data package.
DASHER_FILES = {
    "en": "english_GB", "es": "spanish_ES", "fr": "french_FR", "de": "german_DE", "it": "italian_IT",
    "pt": "portuguese_BR", "nl": "dutch_NL", "pl": "polish_PL", "cs": "czech_CS", "ru": "russian_RU",
    "sv": "swedish_SE", "da": "danish_DK", "fi": "finnish_FI", "hu": "hungarian_HU", "tr": "turkish_TR",
    "el": "greek_GR", "he": "hebrew_IL", "fa": "persian_IR", "bn": "bengali_BD", "cy": "welsh_GB",
    "eu": "basque_ES", "sq": "albanian_SQ", "sw": "swahili_KE", "mn": "mongolian_MN",
}
DASHER_PACKAGE = "dasher-data"
DASHER_DIR = "usr/share/dasher"
FOLDER_HINT = "pass a folder instead: nextchar prepare --corpus DIR (a folder of <lang>.txt UTF-8 files)"

SPLIT_FRACTIONS = (0.90, 0.95)  # train ends at 90%, dev at 95%, test is the rest
CUT_WINDOW = 2000  # how far a cut may move forward to reach a paragraph start or a space

def normalize(raw: bytes, name: str) -> str:
    """Clean text: UTF-8 (bad bytes -> U+FFFD, logged), NFC, one space per whitespace run, "\\n" between paragraphs.

    Paragraphs are separated by blank lines (whitespace-only lines count); single line breaks inside a paragraph
    become spaces. Also (beyond plain whitespace rules): C1 controls are read as Windows-1252, other
    non-whitespace control characters and every U+FEFF are dropped, and a run of more than MAX_MARKS combining
    characters keeps its first MAX_MARKS (nextchar.text: the steps prediction shares). Raises UserError when raw
    looks binary.
    Time and memory are linear in len(raw) for any input.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{name}: looks like UTF-16 text; save it as UTF-8")
    # NUL early on (git's test) or many NULs anywhere: binary. A couple of stray NULs in a big text are just dropped.
    if b"\x00" in raw[:8000] or raw.count(b"\x00") > len(raw) // 1000:
        raise UserError(f"{name}: looks binary (contains NUL bytes); expected UTF-8 text")
    text = raw.decode("utf-8", "replace")
    bad = text.count("\ufffd") - raw.count("\ufffd".encode("utf-8"))
    if bad:
        if bad > 0.25 * len(text):
            raise UserError(f"{name}: looks binary ({bad} invalid UTF-8 sequences in {len(text)} characters); "
                            "expected UTF-8 text")
        log.warning("%s: replaced %d invalid UTF-8 byte sequence(s) with U+FFFD (is the file UTF-8?)", name, bad)
    text = text.removeprefix("\ufeff")
    return paragraphs(_clean(text)[0])  # nextchar.text: the same steps every prediction applies to its prefix


def split_text(text: str) -> tuple[str, str, str]:
    """Contiguous (train, dev, test) = ~90/5/5% of text's characters; train + dev + test == text.

    Each cut moves forward to the next paragraph start (just after a "\\n"); if there is none near, to just after
    the next space (so every split starts at a word); else it stays. "Near" is within CUT_WINDOW characters and
    within half the nominal size of the split that follows, so on small texts a cut never eats most of dev or
    test; for len(text) >= 20 all three splits are non-empty.
    """
    if not text:
        return "", "", ""
    cut1, cut2 = split_cuts(len(text), lambda a, b: text[a:b])
    return text[:cut1], text[cut1:cut2], text[cut2:]


def split_cuts(n: int, window: Callable[[int, int], str]) -> tuple[int, int]:
    """split_text's two cut positions for a text of n >= 1 characters, reading only window(a, b) == text[a:b]
    around the nominal cuts (so a text on disk never has to be in memory)."""
    raw1 = max(1, int(n * SPLIT_FRACTIONS[0]))
    raw2 = max(raw1, int(n * SPLIT_FRACTIONS[1]))
    return _move_cut(window, raw1, (raw2 - raw1) // 2), _move_cut(window, raw2, (n - raw2) // 2)


def _move_cut(window: Callable[[int, int], str], cut: int, max_move: int) -> int:
    """The first paragraph start, else word start, in (cut, cut + min(CUT_WINDOW, max_move)]; else cut."""
    end = cut + min(CUT_WINDOW, max_move)  # a separator at index j < end moves the cut to j + 1 <= end
    w = window(cut - 1, end)  # text[cut - 1:end]
    if w[0] == "\n":
        return cut
    for sep in ("\n", " "):
        j = w.find(sep, 1)
        if j >= 0:
            return cut + j  # (cut - 1 + j) + 1
    return cut


# ---------------------------------------------------------------- sources


def corpus_sources(path: str | Path) -> dict[str, list[Path]]:
    """The files of each language in a corpus folder: <lang>.txt, or a folder <lang>/ of .txt shards (sorted)."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: corpus folder not found")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder (--corpus wants a folder of <lang>.txt files)")
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith(".")
                         and (p.suffix == ".txt" or p.is_dir()))
    except OSError as e:
        raise UserError(f"{root}: cannot list folder ({e.strerror})") from None
    if not entries:
        raise UserError(f"{root}: no .txt files (expected one <lang>.txt per language, e.g. en.txt, or a folder "
                        "<lang>/ of .txt files)")
    sources: dict[str, list[Path]] = {}
    for p in entries:
        label = p.name if p.is_dir() else p.stem
        if not re.fullmatch(r"[A-Za-z0-9_-]+", label):
            what = "the folder name" if p.is_dir() else "the file name"
            raise UserError(f"{p}: language label {label!r} ({what}) may only use letters, digits, - and _")
        if label in sources:
            raise UserError(f"{p}: language {label!r} is given twice (as {label}.txt and as a folder {label}/)")
        if p.is_dir():
            try:
                files = sorted(f for f in p.rglob("*.txt") if not any(x.startswith(".") for x in f.parts[len(p.parts):]))
            except OSError as e:
                raise UserError(f"{p}: cannot list folder ({e.strerror})") from None
            if not files:
                raise UserError(f"{p}: language folder has no .txt files")
        else:
            files = [p]
        for f in files:
            if not f.is_file():
                raise UserError(f"{f}: not a regular file")
        sources[label] = files
    return sources


def read_folder(path: str | Path) -> dict[str, str]:
    """Normalized texts of a corpus folder (see corpus_sources), by language label; a folder's files are joined
    as separate paragraphs. In memory: prepare() streams the same texts instead."""
    texts = {}
    for lang, files in corpus_sources(path).items():
        parts = []
        for p in files:
            try:
                raw = p.read_bytes()
            except OSError as e:
                raise UserError(f"{p}: cannot read ({e.strerror})") from None
            parts.append(normalize(raw, str(p)))
        texts[lang] = _nonempty("\n".join(t for t in parts if t), files[0] if len(files) == 1 else files[0].parent)
    return texts


def _nonempty(text: str, origin: Path) -> str:
    if not text:
        raise UserError(f"{origin}: no text (empty or only whitespace after normalization)")
    return text


def cache_dir() -> Path:
    """Where downloads go: $NEXTCHAR_CACHE/dasher, default ~/.cache/nextchar/dasher."""
    root = os.environ.get("NEXTCHAR_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "nextchar") / "dasher"


def dasher_sources(cache: str | Path | None = None) -> dict[str, list[Path]]:
    """The Dasher training text of each of the 24 languages of DASHER_FILES, fetching the .deb if needed."""
    cache = Path(cache) if cache is not None else cache_dir()
    root = unpacked_deb(fetch_dasher_deb(cache), cache) / DASHER_DIR
    sources = {}
    for lang, part in DASHER_FILES.items():
        p = root / f"training_{part}.txt"
        if not p.is_file():
            raise UserError(f"{p}: Dasher text missing; delete {cache} to fetch it again")
        sources[lang] = [p]
    return sources


def read_dasher(cache: str | Path | None = None) -> dict[str, str]:
    """Normalized Dasher training texts for the 24 languages of DASHER_FILES, fetching the .deb if needed."""
    cache = Path(cache) if cache is not None else cache_dir()
    deb = fetch_dasher_deb(cache)
    root = unpacked_deb(deb, cache) / DASHER_DIR
    texts = {}
    for lang, part in DASHER_FILES.items():
        p = root / f"training_{part}.txt"
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise UserError(f"{p}: cannot read Dasher text ({e.strerror}); delete {cache} to fetch it again") from None
        texts[lang] = _nonempty(normalize(raw, str(p)), p)
    return texts


def fetch_dasher_deb(cache: Path) -> Path:
    """The dasher-data .deb in cache, downloaded with `apt-get download` unless one is already there."""
    debs = sorted(cache.glob(f"{DASHER_PACKAGE}_*.deb"))
    if debs:
        return debs[-1]
    if shutil.which("apt-get") is None:
        raise UserError(f"cannot fetch the Dasher corpus: apt-get is not available; {FOLDER_HINT}")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
    except OSError as e:
        raise UserError(f"{cache}: cannot create cache dir ({e.strerror}); set NEXTCHAR_CACHE elsewhere") from None
    try:
        # Download into a private dir, then move: an interrupted download never looks like a cached .deb.
        ok, out = _run(["apt-get", "download", DASHER_PACKAGE], tmp)
        if not ok and _is_root():  # empty or stale package lists are the usual cause
            log.warning("apt-get download %s failed; running apt-get update once and retrying", DASHER_PACKAGE)
            _run(["apt-get", "update"], tmp)
            ok, out = _run(["apt-get", "download", DASHER_PACKAGE], tmp)
        got = sorted(tmp.glob(f"{DASHER_PACKAGE}_*.deb"))
        if not ok or not got:
            last = out.strip().splitlines()[-1] if out.strip() else "no output"
            raise UserError(f"cannot fetch the Dasher corpus: `apt-get download {DASHER_PACKAGE}` failed ({last}); "
                            f"{FOLDER_HINT}")
        deb = cache / got[-1].name
        os.replace(got[-1], deb)
        return deb
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0


def _run(cmd: list[str], cwd: Path) -> tuple[bool, str]:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, r.stdout + r.stderr


def unpacked_deb(deb: Path, cache: Path) -> Path:
    """Root of deb's files unpacked (not installed) under cache, unpacking once and reusing it after."""
    dest = cache / deb.name.removesuffix(".deb")
    if dest.is_dir():
        return dest
    try:
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
    except OSError as e:
        raise UserError(f"{cache}: cannot unpack {deb.name} here ({e.strerror}); set NEXTCHAR_CACHE elsewhere") from None
    try:
        if shutil.which("dpkg-deb"):
            ok, out = _run(["dpkg-deb", "-x", str(deb), str(tmp)], cache)
            if not ok:
                raise UserError(f"{deb}: dpkg-deb could not unpack it ({out.strip()}); delete it to download again")
        else:
            extract_deb(deb, tmp)
        os.replace(tmp, dest)  # only a complete unpack gets the name that is reused
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def extract_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files into dest in pure Python (for systems without dpkg-deb)."""
    name, payload = _deb_data_member(deb)
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python without extraction filters: take regular files and dirs with safe names only
                safe = [m for m in tar.getmembers() if (m.isfile() or m.isdir())
                        and not m.name.startswith("/") and ".." not in Path(m.name).parts]
                tar.extractall(dest, members=safe)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{deb}: cannot unpack {name} ({e}); install dpkg-deb, or delete the .deb to "
                        "download it again") from None


def _deb_data_member(deb: Path) -> tuple[str, bytes]:
    """(name, bytes) of the data.tar.* member of a .deb, which is an `ar` archive."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise UserError(f"{deb}: not a .deb (ar) archive; delete it to download again")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58])
        except ValueError:
            break
        if name.startswith("data.tar"):
            return name, blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)  # members are 2-byte aligned
    raise UserError(f"{deb}: no data.tar member; delete it to download again")


# ---------------------------------------------------------------- streaming normalization

CHUNK_BYTES = 8 << 20  # raw bytes read at a time: prepare's memory is a small multiple of this, whatever the corpus
BLOCK_CHARS = 4 << 20  # code points per read of a normalized temp file (histograms, windows, encoding)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_FFFD = "\ufffd".encode("utf-8")
_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


def _cut_point(text: str) -> int:
    """Where text may be split so that cleaning the two parts apart equals cleaning them together; 0 = nowhere.

    After the last "\\n" (never inside "\\r\\n"; nothing composes with a newline under NFC). Without one, before
    the last character that no canonical composition or reordering links to what precedes it: ASCII (not "\\n"),
    else a starter that is neither a combining mark nor a Hangul jamo (within the last 4,096 characters); never
    before a character that cleaning deletes, since that would let its neighbours meet (and compose) only in the
    whole text. Failing those, at the end of the last run of over MAX_MARKS marks (maybe the end of text): the
    part before ends with MAX_MARKS marks, so what follows composes with nothing before it, and cap_marks, given
    the run count (see _clean), drops any marks the next part opens with; so even one endless line of marks is
    cut into pieces.
    """
    i = text.rfind("\n") + 1
    if i:
        return i
    rev = text[::-1]  # the last ASCII character that is kept, found from the end at C speed
    m = _ASCII_KEPT.search(rev)
    if m and m.start() < len(text) - 1:
        return len(text) - 1 - m.start()
    lo = max(0, len(text) - 4096)
    for j in range(len(text) - 1, lo, -1):
        c, cp = text[j], ord(text[j])
        if not unicodedata.combining(c) and not unicodedata.category(c).startswith("M") \
                and not any(a <= cp <= b for a, b in _JAMO) and not _CONTROLS.match(c):
            return j
    if len(text) <= MAX_MARKS:
        return 0
    starts, ends = mark_runs(code_points(text))
    long = np.flatnonzero(ends - starts > MAX_MARKS)  # runs cap_marks shortens
    return int(ends[long[-1]]) if len(long) else 0


_ASCII_KEPT = re.compile("[\t-\r\x1c-\x7e]")  # ASCII that _CONTROLS leaves alone


class _Paragraphs:
    """normalize()'s whitespace rules over a stream of cleaned text pieces cut anywhere.

    normalize() joins the words (runs of non-whitespace) of a paragraph with one space and paragraphs with "\\n";
    so between two words goes "\\n" if the whitespace between them holds a blank line (two "\\n") and " " else.
    Each piece's inside is normalized the same way; only the whitespace around its edges is carried over.
    """

    def __init__(self) -> None:
        self.started = False  # a word has been emitted
        self.gap = False  # whitespace seen since the last emitted character
        self.newlines = 0  # "\n"s in that whitespace

    def feed(self, text: str, final: bool = False) -> str:
        body = text.lstrip()
        if len(body) < len(text):
            self.gap = True
            self.newlines += text.count("\n", 0, len(text) - len(body))
        if not body:
            return ""
        trail = ""
        if not final:
            stripped = body.rstrip()
            body, trail = stripped, body[len(stripped):]
        norm = paragraphs(body)
        sep = ("\n" if self.newlines >= 2 else " ") if self.started and self.gap else ""
        self.started, self.gap, self.newlines = True, bool(trail), trail.count("\n")
        return sep + norm

    def next_file(self) -> None:
        """A new file starts a new paragraph."""
        self.gap, self.newlines = True, 2


def _open(path: Path):
    try:
        return open(path, "rb")  # the caller's with-block closes it
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def stream_normalize(files: list[Path], chunk_bytes: int | None = None) -> Iterator[str]:
    """normalize() of each file, joined as separate paragraphs, as a stream of pieces: bounded memory.

    The pieces concatenate to exactly "\\n".join(non-empty normalize(file) ...). The whole-file checks of normalize
    (binary, UTF-16, invalid UTF-8) raise the same UserError, once the file has been read far enough to tell.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    para = _Paragraphs()
    for k, path in enumerate(files):
        if k:
            para.next_file()
        name = str(path)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending: list[str] = []  # decoded text after the last cut (a list: a long uncut stretch is joined once)
        run = 0  # marks the text cleaned so far ends with (cap_marks)
        tail = b""
        n_raw = n_text = nuls = real_fffd = fffd = 0
        with _open(path) as f:
            while True:
                try:
                    raw = f.read(chunk_bytes)
                except OSError as e:
                    raise UserError(f"{path}: cannot read ({e.strerror})") from None
                final = not raw
                if n_raw == 0 and raw.startswith(_UTF16_BOMS):
                    raise UserError(f"{name}: looks like UTF-16 text; save it as UTF-8")
                if n_raw < 8000 and b"\x00" in raw[:8000 - n_raw]:
                    raise UserError(f"{name}: looks binary (contains NUL bytes); expected UTF-8 text")
                nuls += raw.count(b"\x00")
                real_fffd += raw.count(_FFFD) + (tail + raw[:2]).count(_FFFD)  # + sequences across the boundary
                tail = (tail + raw)[-2:]
                n_raw += len(raw)
                text = decoder.decode(raw, final)
                n_text += len(text)
                fffd += text.count("\ufffd")
                if final:
                    if nuls > n_raw // 1000:
                        raise UserError(f"{name}: looks binary (contains NUL bytes); expected UTF-8 text")
                    bad = fffd - real_fffd
                    if bad > 0.25 * n_text:
                        raise UserError(f"{name}: looks binary ({bad} invalid UTF-8 sequences in {n_text} "
                                        "characters); expected UTF-8 text")
                    if bad:
                        log.warning("%s: replaced %d invalid UTF-8 byte sequence(s) with U+FFFD (is the file UTF-8?)",
                                    name, bad)
                    out = para.feed(_clean("".join(pending) + text, run)[0], final=True)
                    if out:
                        yield out
                    break
                cut = _cut_point(text)  # only the new text is searched: linear time however long the line
                if not cut:
                    pending.append(text)
                    continue
                cleaned, run = _clean("".join(pending) + text[:cut], run)
                pending = [text[cut:]]
                out = para.feed(cleaned)
                if out:
                    yield out


# ---------------------------------------------------------------- prepare


def char_counts(texts) -> Counter:
    """Character counts over texts (vectorized: a histogram of code points)."""
    hist = np.zeros(0x110000, dtype=np.int64)
    for t in texts:
        hist += np.bincount(np.frombuffer(t.encode("utf-32-le", "surrogatepass"), "<u4"), minlength=0x110000)
    nz = np.flatnonzero(hist)
    return Counter({chr(cp): int(hist[cp]) for cp in nz})


class _CodePoints:
    """A normalized text kept on disk as little-endian uint32 code points (random access without memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n = path.stat().st_size // 4

    def read(self, a: int, b: int) -> np.ndarray:
        a, b = max(0, a), min(self.n, b)
        with open(self.path, "rb") as f:
            f.seek(4 * a)
            return np.fromfile(f, dtype="<u4", count=max(0, b - a))

    def text(self, a: int, b: int) -> str:
        return self.read(a, b).tobytes().decode("utf-32-le")

    def blocks(self, a: int, b: int) -> Iterator[np.ndarray]:
        for i in range(a, b, BLOCK_CHARS):
            yield self.read(i, min(b, i + BLOCK_CHARS))


def _write_normalized(files: list[Path], dest: Path, origin: Path) -> tuple[int, int]:
    """Stream-normalize files into dest as uint32 code points; (characters, distinct characters)."""
    seen = np.zeros(0x110000, dtype=bool)
    n = 0
    with _named_errors(dest), open(dest, "wb") as f:
        for piece in stream_normalize(files):
            cps = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), "<u4")
            seen[cps] = True
            f.write(cps.tobytes())
            n += len(cps)
    if n == 0:
        raise UserError(f"{origin}: no text (empty or only whitespace after normalization)")
    return n, int(seen.sum())


def _write_encoded(dest: Path, cps: _CodePoints, a: int, b: int, vocab: Vocab) -> tuple[int, int]:
    """Encode code points [a, b) with vocab into the token file dest; (tokens, unknown tokens)."""
    unk = 0
    with _named_errors(dest), open(dest, "wb") as f:
        for block in cps.blocks(a, b):
            ids = vocab.encode(block.tobytes().decode("utf-32-le", "surrogatepass")).astype(
                vocab.dtype.newbyteorder("<"), copy=False)
            unk += int(np.count_nonzero(ids == UNK))
            f.write(ids.tobytes())
        f.flush()
        os.fsync(f.fileno())
    return b - a, unk


@contextlib.contextmanager
def _named_errors(path: Path) -> Iterator[None]:
    """Give write errors (a full disk raises OSError without a file name) the file they happened in."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def _write_file(path: Path, data: bytes) -> None:
    with _named_errors(path), open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


DATA_FILES = ("stats.json", "vocab.json")


def _check_replaceable(out: Path) -> None:
    """prepare replaces out as a whole: refuse a file, or a folder holding anything but a previous data dir."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: cannot create data dir (a file is in the way)")
    try:
        entries = sorted(out.iterdir())
    except OSError as e:
        raise UserError(f"{out}: cannot list ({e.strerror})") from None
    if not entries:
        return
    names = {p.name for p in entries}

    def ours(p: Path) -> bool:
        if p.name.startswith(".") or p.name in DATA_FILES:
            return True  # leftovers of an older nextchar, and the data files themselves
        return p.is_dir() and not p.is_symlink() and all(
            f.name.startswith(".") or f.name in {f"{s}.bin" for s in SPLITS} for f in p.iterdir())

    foreign = [p for p in entries if not ours(p)]
    if not names & set(DATA_FILES) or foreign:
        what = (foreign or entries)[0].name
        raise UserError(f"{out}: not empty and not a data dir from `nextchar prepare` (it holds {what!r}); "
                        "prepare replaces --out as a whole, so give a new or empty folder")


def prepare(out: str | Path, corpus: str | Path | None = None, min_count: int = 2) -> dict:
    """Normalize, split, build the vocab on train, encode and write the data dir; returns stats.json's dict.

    Streams: each language is normalized chunk by chunk into a temporary file of code points, the vocabulary is
    counted from the train parts, then each split is encoded block by block. Memory stays bounded whatever the
    corpus size (the temporary files take 4 bytes per character until their language is encoded); the result
    is identical to normalizing whole files in memory.

    Crash-safe: everything is written into a private folder beside out (safefs.staging_dir) that replaces out
    in one rename at the end, so out is at every instant the previous data dir, whole, or the new one; a failed
    or killed prepare changes nothing in it, and the next prepare removes a killed one's folder. Raises
    UserError when out holds anything but a previous data dir, and on a full disk (naming the file, the space
    needed and the space free).
    """
    t0 = time.perf_counter()
    check_int(min_count, "min_count")  # before the corpus is read
    out = Path(out)
    if out.is_symlink():
        out = out.resolve()  # replace the folder the link names, keep the link
    if corpus is None:
        sources, source = dasher_sources(), "dasher"
    else:
        sources, source = corpus_sources(corpus), str(Path(corpus).resolve())
    _check_replaceable(out)
    # Peak use beside out: 4 bytes per character for the normalized text of every language, plus the token
    # files (2 or 4 bytes per character); a character is at least one input byte, so this bounds it.
    in_bytes = sum(f.stat().st_size for files in sources.values() for f in files)
    need = 6 * in_bytes
    missing = next((p for p in [out.parent, *out.parent.parents][::-1] if not p.exists()), None)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = safefs.staging_dir(out, "prepare")
    except OSError as e:
        if safefs.is_no_space(e):
            raise safefs.no_space_error(out, need) from None
        raise UserError(f"{out}: cannot create data dir ({e.strerror or e})") from None
    norm = work / ".normalized"
    try:
        norm.mkdir()
        texts: dict[str, tuple[_CodePoints, int, int]] = {}
        distinct: dict[str, int] = {}
        hist = np.zeros(0x110000, dtype=np.int64)  # train-part character counts, all languages
        for lang, files in sorted(sources.items()):
            origin = files[0] if len(files) == 1 else files[0].parent
            n, distinct[lang] = _write_normalized(files, norm / f"{lang}.u32", origin)
            cps = _CodePoints(norm / f"{lang}.u32")
            cut1, cut2 = split_cuts(n, cps.text)
            for block in cps.blocks(0, cut1):
                hist += np.bincount(block, minlength=0x110000)
            texts[lang] = (cps, cut1, cut2)
        vocab = Vocab.build(Counter({chr(cp): int(hist[cp]) for cp in np.flatnonzero(hist)}), min_count=min_count)
        need = sum(c.n for c, _, _ in texts.values()) * vocab.dtype.itemsize  # what is left to write
        languages = {}
        for lang, (cps, cut1, cut2) in texts.items():
            (work / lang).mkdir()
            entry = {}
            for split, (a, b) in zip(SPLITS, ((0, cut1), (cut1, cut2), (cut2, cps.n))):
                entry[split], entry[f"unk_{split}"] = _write_encoded(work / lang / f"{split}.bin", cps, a, b, vocab)
            languages[lang] = {k: entry[k] for k in ("train", "dev", "test", "unk_train", "unk_dev", "unk_test")}
            cps.path.unlink()  # free the disk as soon as a language is written
            need -= cps.n * vocab.dtype.itemsize
        norm.rmdir()
        stats = {"source": source, "dtype": vocab.dtype.name, "vocab_size": vocab.size, "vocab_hash": vocab.hash,
                 "min_count": min_count, "languages": languages}
        _write_file(work / "vocab.json", json.dumps(vocab.to_dict(), ensure_ascii=False, indent=0).encode("utf-8"))
        _write_file(work / "stats.json", (json.dumps(stats, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
        safefs.replace_dir(work, out)
    except BaseException as e:
        safefs.rmtree(work)
        if missing is not None:
            safefs.rmtree(missing)  # a failed first prepare leaves nothing behind
        if safefs.is_no_space(e):
            kept = f"{out} is as it was" if out.exists() else f"nothing was written to {out}"
            raise safefs.no_space_error(Path(e.filename or work), need, kept) from None
        if isinstance(e, OSError):
            raise UserError(f"{e.filename or out}: cannot write ({e.strerror or e}); {out} is as it was") from None
        raise
    print(summary_table(stats, distinct))
    print(f"vocab: {vocab.size} tokens (min_count {min_count}, hash {vocab.hash}); wrote {out} "
          f"in {time.perf_counter() - t0:.1f}s")
    return stats


def summary_table(stats: dict, distinct: dict[str, int] | None = None) -> str:
    """Per-language chars per split, dev unknown-char rate and distinct chars, plus a total line."""
    distinct = distinct or {}
    rows = [("lang", "train", "dev", "test", "dev unk%", "distinct")]
    tot = dict.fromkeys(("train", "dev", "test", "unk_dev"), 0)
    for lang, e in sorted(stats["languages"].items()):
        for k in tot:
            tot[k] += e.get(k, 0)
        rows.append((lang, f"{e['train']:,}", f"{e['dev']:,}", f"{e['test']:,}", _pct(e.get("unk_dev", 0), e["dev"]),
                     str(distinct.get(lang, ""))))
    rows.append(("total", f"{tot['train']:,}", f"{tot['dev']:,}", f"{tot['test']:,}", _pct(tot["unk_dev"], tot["dev"]),
                 f"{stats['vocab_size']} (vocab)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.2f}%" if n else "-"
