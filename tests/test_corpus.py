"""Tests for corpus normalization, splits, sources (folder, Dasher .deb) and prepare()."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import random
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TEXTS

from nextchar import corpus
from nextchar.corpus import DASHER_FILES, normalize, prepare, read_folder, split_text
from nextchar.errors import UserError
from nextchar.text import cap_marks  # the mark cap lives with the rest of the shared normalization


def norm(s: str | bytes) -> str:
    return normalize(s.encode("utf-8") if isinstance(s, str) else s, "t.txt")


# ---------------------------------------------------------------- normalize


@pytest.mark.parametrize("sep", ["\r\n", "\r", "\x85", "\u2028", "\u2029", "\n"])
def test_line_endings_inside_and_between_paragraphs(sep):
    assert norm(f"one{sep}two{sep}{sep}three{sep}") == "one two\nthree"


def test_mixed_line_endings_and_whitespace_only_blank_lines():
    assert norm("a\r\nb\r\r\nc\n \t\u00a0\r\nd\u2029\u2029e") == "a b\nc\nd\ne"


def test_bom_dropped():
    assert norm(b"\xef\xbb\xbfhello") == "hello"
    assert norm(b"\xef\xbb\xbf\xef\xbb\xbfhi") == "hi"  # a stray second BOM goes too


def test_nfd_to_nfc():
    assert norm("Cafe\u0301 A\u030a") == "Caf\u00e9 \u00c5"


def test_whitespace_runs_become_one_space():
    assert norm("  a \t b\u00a0\u00a0c\u3000d\u2003 e\x0bf\x0cg  ") == "a b c d e f g"


def test_paragraphs_and_empty_paragraphs():
    raw = "\n\n  p1 line1\np1   line2\n\n\n \t \n\np2\n\n\n"
    assert norm(raw) == "p1 line1 p1 line2\np2"
    assert norm(" \n\t\n ") == ""


def test_invalid_bytes_replaced_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="nextchar.corpus"):
        assert normalize(b"ab\xffcd\xc3 e", "bad.txt") == "ab\ufffdcd\ufffd e"
    [rec] = caplog.records
    assert "bad.txt" in rec.getMessage() and " 2 " in rec.getMessage()
    assert "\n" not in rec.getMessage()


def test_valid_replacement_char_is_not_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="nextchar.corpus"):
        assert norm("a\ufffdb") == "a\ufffdb"
    assert not caplog.records


def test_control_characters():
    # C1 controls are Windows-1252 mojibake (Dasher's French uses U+0092 as apostrophe); other controls go.
    assert norm("l\u0092homme\u0080 a\x1bb\x04c\x7fd x\ufeffy") == "l\u2019homme\u20ac abcd xy"


@pytest.mark.parametrize("raw", [b"text\x00more", b"\xff\xfeh\x00i\x00", bytes(range(256)) * 4,
                                 bytes(random.Random(0).randrange(128, 256) for _ in range(4000))])
def test_binary_rejected(raw):
    with pytest.raises(UserError, match=r"^blob\.bin: looks"):
        normalize(raw, "blob.bin")


def test_few_stray_nuls_in_long_text_are_dropped():
    raw = b"word " * 4000 + b"\x00" + b"end"
    assert norm(raw).endswith("word end")


def test_normalized_invariants_on_random_text():
    rng = random.Random(1)
    pieces = ["a", "b", "é", "e\u0301", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", "\x85", "\u2028", "\u2029",
              "\u00a0", "\u3000", "\ufeff", "\x92", "ж", "日"]
    for _ in range(300):
        out = norm("".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40))))
        for bad in ("\r", "\t", "  ", "\n\n", "\x85", "\u2028", "\u2029", "\u00a0", "\ufeff", "e\u0301"):
            assert bad not in out
        assert out == out.strip()
        assert all(line == " ".join(line.split()) and line for line in out.split("\n")) or out == ""


def test_combining_mark_runs_keep_their_first_30():
    """Issue 14, fault 6: NFC sorts a run of marks in quadratic time; runs over 30 (UAX #15's stream-safe bound)
    keep their first 30, so prepare is linear on any text. The issue's example: one 640 KB line of U+0301/U+0316."""
    import unicodedata

    nfc = functools.partial(unicodedata.normalize, "NFC")
    assert norm("a" + "\u0301\u0316" * 160_000) == nfc("a" + "\u0301\u0316" * 15)  # 640,001 bytes
    assert norm("x" + "\u0301" * 30 + " y") == nfc("x" + "\u0301" * 30) + " y"  # 30 is kept whole
    assert norm("\u0f73" * 31) == nfc("\u0f73" * 30)  # class 0, but decomposes to two marks: counted as one
    # deleted controls do not split a run; a base letter or a space does
    assert norm("e" + "\u0301\x01" * 40) == nfc("e" + "\u0301" * 30)
    assert norm(("o" + "\u0308" * 40) * 2) == nfc("o" + "\u0308" * 30) * 2
    assert norm("\u0301" * 40 + " " + "\u0301" * 40) == "\u0301" * 30 + " " + "\u0301" * 30
    # 30 marks of mixed classes are still put in canonical order and composed as NFC does
    mixed = "a" + "\u0316\u0301" * 15
    assert norm(mixed + "\u0316" * 10) == nfc(mixed) == "\u00e1" + "\u0316" * 15 + "\u0301" * 14


def test_cap_marks_in_pieces_equals_whole():
    rng = random.Random(3)
    alphabet = ["\u0301", "\u0316", "\u0f73", "a", " ", "\u1161"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) if rng.random() < 0.2 else rng.choice(alphabet[:3]) * rng.randrange(1, 40)
                       for _ in range(rng.randrange(0, 12)))
        whole, whole_run = cap_marks(text)
        cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
        pieces, run = [], 0
        for a, b in zip([0, *cuts], [*cuts, len(text)]):
            out, run = cap_marks(text[a:b], run)
            pieces.append(out)
        assert "".join(pieces) == whole and run == whole_run, text


def test_cut_point_inside_endless_marks():
    marks = "\u0301\u0316" * 50
    assert corpus._cut_point(marks) == 100  # the end of a run over 30: the next piece's marks are dropped
    assert corpus._cut_point(marks + "\u1161" * 9) == 100  # jamo: never a cut before them
    assert corpus._cut_point("\u0301" * 30 + "\u1161") == 0  # a run of 30 is kept whole: no cut
    assert corpus._cut_point("ab\u0301\u0301") == 1 and corpus._cut_point("x\ny") == 2


# ---------------------------------------------------------------- split_text


def paragraphs_text(n_par: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    return "\n".join(" ".join(rng.choice(words) for _ in range(rng.randrange(5, 30))) for _ in range(n_par))


def test_split_is_a_deterministic_partition():
    text = paragraphs_text(500)
    parts = split_text(text)
    assert split_text(text) == parts
    assert "".join(parts) == text


def test_split_ratios_roughly_90_5_5():
    text = paragraphs_text(2000)
    train, dev, test = split_text(text)
    n = len(text)
    assert abs(len(train) / n - 0.90) < 0.005
    assert abs(len(dev) / n - 0.05) < 0.005
    assert abs(len(test) / n - 0.05) < 0.005


def test_cuts_land_on_paragraph_starts():
    text = paragraphs_text(500)
    train, dev, _test = split_text(text)
    assert train.endswith("\n") and dev.endswith("\n")
    n = len(text)
    # ...and at the first paragraph start at or after the nominal cut
    assert "\n" not in text[int(n * 0.9):len(train) - 1]
    assert "\n" not in text[int(n * 0.95):len(train) + len(dev) - 1]


def test_cut_falls_back_to_space_then_stays():
    unit = "abcdefghi "  # 10 chars, a space every 10
    text = unit * 10000  # n = 100000, nominal cuts 90000 and 95000
    train, dev, _test = split_text(text)
    assert (len(train), len(train) + len(dev)) == (90010, 95010)  # just after the next space
    # a "\n" within 2000 chars wins over the nearer space
    text2 = text[:91000] + "\n" + text[91001:]
    assert len(split_text(text2)[0]) == 91001
    # a "\n" beyond 2000 chars does not
    text3 = text[:92500] + "\n" + text[92501:]
    assert len(split_text(text3)[0]) == 90010
    # no separator at all: the cut stays
    assert [len(p) for p in split_text("x" * 100000)] == [90000, 5000, 5000]


def test_split_small_texts_nonempty():
    for n in range(1, 300):
        for text in ("x" * n, ("ab " * n)[:n], ("abc\n" * n)[:n], ("a" * 40 + "\n") * (n // 41 + 1)):
            text = text[:n]
            train, dev, test = split_text(text)
            assert train + dev + test == text and train
            if n >= 20:
                assert dev and test, (n, text)


def test_tiny_corpus_splits_big_enough():
    for lang, raw in TINY_TEXTS.items():
        train, dev, test = split_text(norm(raw))
        assert len(train) > 1000 and len(dev) >= 60 and len(test) >= 60, lang


# ---------------------------------------------------------------- folder source


def test_read_folder(tiny_corpus_dir):
    texts = read_folder(tiny_corpus_dir)
    assert sorted(texts) == sorted(TINY_TEXTS)
    assert texts["ru"] == norm(TINY_TEXTS["ru"])


def test_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=f"^{missing}: corpus folder not found"):
        read_folder(missing)
    f = tmp_path / "file.txt"
    f.write_text("hi")
    with pytest.raises(UserError, match=f"^{f}: not a folder"):
        read_folder(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("not a corpus")
    with pytest.raises(UserError, match=f"^{empty}: no .txt files"):
        read_folder(empty)


@pytest.mark.parametrize("content, message", [
    (b"", "no text"), (b" \n\t\r\n \xc2\xa0", "no text"), (b"\x7fELF\x02\x01\x01\x00\x00\x00", "looks binary"),
    (bytes(range(128, 256)) * 8, "looks binary"),
])
def test_bad_file_in_folder(tiny_corpus_dir, content, message):
    bad = tiny_corpus_dir / "xx.txt"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=f"^{bad}: {message}"):
        read_folder(tiny_corpus_dir)


def test_bad_label(tiny_corpus_dir):
    bad = tiny_corpus_dir / "vocab.json.txt"
    bad.write_text("some text here")
    with pytest.raises(UserError, match=f"^{bad}: language label"):
        read_folder(tiny_corpus_dir)


def test_unreadable_file(tiny_corpus_dir, monkeypatch):
    bad = tiny_corpus_dir / "en.txt"
    real = Path.read_bytes

    def read_bytes(self):
        if self == bad:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)  # chmod 0 does not stop root
    with pytest.raises(UserError, match=f"^{bad}: cannot read \\(Permission denied\\)"):
        read_folder(tiny_corpus_dir)


# ---------------------------------------------------------------- prepare


def test_prepare_stats_and_table(tiny_corpus_dir, tmp_path, capsys):
    out = tmp_path / "data"
    stats = prepare(out, tiny_corpus_dir)
    printed = capsys.readouterr().out
    assert stats == json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["source"] == str(tiny_corpus_dir.resolve())
    assert stats["dtype"] == "uint16" and stats["min_count"] == 2
    assert sorted(stats["languages"]) == sorted(TINY_TEXTS)
    for lang, e in stats["languages"].items():
        assert e["train"] + e["dev"] + e["test"] == len(norm(TINY_TEXTS[lang]))
        assert (out / lang / "train.bin").stat().st_size == 2 * e["train"]
        assert lang in printed
    assert "total" in printed
    # writing again into the same dir replaces the files, leaving no temp files behind
    assert prepare(out, tiny_corpus_dir) == stats
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_prepare_counts_unknown_chars(tmp_path, capsys):
    folder = tmp_path / "c"
    folder.mkdir()
    # "q" appears once (below min_count 2), in the text's first 90%, so train has exactly one unknown character
    (folder / "xx.txt").write_text("q" + "ab " * 200, encoding="utf-8")
    stats = prepare(tmp_path / "d", folder)
    assert stats["languages"]["xx"]["unk_train"] == 1
    assert stats["vocab_size"] == 5  # <unk>, \n, space, a, b


def test_prepare_out_is_a_file(tiny_corpus_dir, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(UserError, match=f"^{f}: cannot create"):
        prepare(f, tiny_corpus_dir)


# ---------------------------------------------------------------- Dasher source (hermetic: a fake .deb and apt-get)


def fake_deb(path: Path, texts: dict[str, bytes]) -> Path:
    """A minimal .deb: an ar archive holding debian-binary, control.tar.xz and data.tar.xz."""
    def tar_xz(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    control = b"Package: dasher-data\nVersion: 9.9-1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", tar_xz({"./control": control})),
               ("data.tar.xz", tar_xz({f"./usr/share/dasher/{k}": v for k, v in texts.items()}))]
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


DASHER_FAKE = {f"training_{part}.txt": f"{lang} text number one.\n\n{lang} two.\n".encode()
               for lang, part in DASHER_FILES.items()}


@pytest.mark.parametrize("dpkg", [True, False])
def test_read_dasher_from_cached_deb(tmp_path, monkeypatch, dpkg):
    if dpkg and not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not installed")
    monkeypatch.setenv("NEXTCHAR_CACHE", str(tmp_path))
    cache = tmp_path / "dasher"
    cache.mkdir()
    fake_deb(cache / "dasher-data_9.9-1_all.deb", DASHER_FAKE)
    if not dpkg:
        real_which = shutil.which
        monkeypatch.setattr(corpus.shutil, "which", lambda cmd: None if cmd == "dpkg-deb" else real_which(cmd))
    texts = corpus.read_dasher()
    assert sorted(texts) == sorted(DASHER_FILES) and len(texts) == 24
    assert texts["mn"] == "mn text number one.\nmn two."
    assert (cache / "dasher-data_9.9-1_all" / "usr/share/dasher/training_welsh_GB.txt").is_file()


def fake_apt(bin_dir: Path, log: Path, fail_downloads: int, deb: Path | None) -> None:
    """An apt-get on PATH that records its calls, fails the first fail_downloads downloads, then copies deb."""
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
[ "$1" = update ] && exit 0
n=$(grep -c download {log})
if [ "$n" -le {fail_downloads} ] || [ -z "{deb or ''}" ]; then echo "E: Unable to locate package dasher-data" >&2; exit 100; fi
cp {deb} .
""")
    script.chmod(0o755)


def test_fetch_updates_once_when_root_then_retries(tmp_path, monkeypatch):
    deb = fake_deb(tmp_path / "dasher-data_9.9-1_all.deb", DASHER_FAKE)
    log = tmp_path / "calls"
    fake_apt(tmp_path / "bin", log, fail_downloads=1, deb=deb)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(corpus, "_is_root", lambda: True)
    cache = tmp_path / "cache"
    got = corpus.fetch_dasher_deb(cache)
    assert got == cache / deb.name and got.read_bytes() == deb.read_bytes()
    assert log.read_text().split("\n") == ["download dasher-data", "update", "download dasher-data", ""]
    assert corpus.fetch_dasher_deb(cache) == got  # reused: no more apt calls
    assert len(log.read_text().splitlines()) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_fetch_failure_says_how_to_pass_a_folder(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    fake_apt(tmp_path / "bin", log, fail_downloads=99, deb=None)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(corpus, "_is_root", lambda: False)
    with pytest.raises(UserError, match=r"Unable to locate package.*nextchar prepare --corpus DIR"):
        corpus.fetch_dasher_deb(tmp_path / "cache")
    assert log.read_text().splitlines() == ["download dasher-data"]  # no apt-get update unless root


def test_no_apt_says_how_to_pass_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.shutil, "which", lambda cmd: None)
    with pytest.raises(UserError, match=r"apt-get is not available.*--corpus DIR"):
        corpus.fetch_dasher_deb(tmp_path / "cache")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NEXTCHAR_CACHE", str(tmp_path))
    assert corpus.cache_dir() == tmp_path / "dasher"
    monkeypatch.delenv("NEXTCHAR_CACHE")
    assert corpus.cache_dir() == Path.home() / ".cache" / "nextchar" / "dasher"


@pytest.mark.slow
def test_real_dasher(tmp_path, capsys):
    """The real corpus (downloads dasher-data into the user cache once)."""
    if not shutil.which("apt-get") and not list(corpus.cache_dir().glob("dasher-data_*.deb")):
        pytest.skip("apt-get unavailable and no cached dasher-data .deb")
    try:
        stats = prepare(tmp_path / "data")
    except UserError as e:
        if "cannot fetch" in str(e):
            pytest.skip(str(e))
        raise
    assert stats["source"] == "dasher"
    assert sorted(stats["languages"]) == sorted(DASHER_FILES)
    for lang, e in stats["languages"].items():
        assert e["train"] > 20000 and e["dev"] > 1000 and e["test"] > 1000, lang
        assert e["unk_train"] < 0.001 * e["train"], lang
    assert 300 < stats["vocab_size"] < 65535
    assert np.fromfile(tmp_path / "data/en/dev.bin", dtype="<u2").size == stats["languages"]["en"]["dev"]


# ---------------------------------------------------------------- prepare is all or nothing (issue 14, faults 1, 8)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def siblings(d: Path) -> list[str]:
    return sorted(p.name for p in d.parent.iterdir() if p.name.startswith(f".{d.name}."))


def test_failed_prepare_leaves_the_previous_data_dir(tiny_corpus_dir, tmp_path, capsys):
    """The issue's example: a second prepare with another vocabulary fails midway; d must still be the first."""
    from nextchar.data import open_data

    d = tmp_path / "d"
    prepare(d, tiny_corpus_dir)
    before = snapshot(d)
    with open(tiny_corpus_dir / "en.txt", "a", encoding="utf-8") as f:
        f.write("\n\nŴŵŷŶ ŴŵŷŶ ŴŵŷŶ ŴŵŷŶ\n" * 50)  # new characters: the vocabulary changes
    (d / "ru").chmod(0o555)  # the trigger (no effect as root, and prepare no longer writes into d)
    (tiny_corpus_dir / "zz.txt").write_bytes(b"\x00binary")  # fails after every other language is normalized
    with pytest.raises(UserError, match="zz.txt: looks binary"):
        prepare(d, tiny_corpus_dir)
    assert snapshot(d) == before and siblings(d) == []
    assert open_data(d).text("en", "dev") == split_text(norm(TINY_TEXTS["en"]))[1]
    (tiny_corpus_dir / "zz.txt").unlink()
    stats = prepare(d, tiny_corpus_dir)  # now it works, read-only subfolder and all
    assert "Ŵ" in open_data(d).vocab.stoi and stats == json.loads((d / "stats.json").read_text(encoding="utf-8"))
    assert siblings(d) == [] and not [p for p in d.rglob(".*")]


def test_prepare_refuses_a_folder_that_is_not_a_data_dir(tiny_corpus_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=f"^{mine}: not empty and not a data dir .*'thesis.tex'"):
        prepare(mine, tiny_corpus_dir)
    assert (mine / "thesis.tex").read_text() == "years of work"
    with pytest.raises(UserError, match="not empty and not a data dir .*'ar.txt'"):
        prepare(tiny_corpus_dir, tiny_corpus_dir)  # --out is the corpus itself
    d = tmp_path / "d"
    prepare(d, tiny_corpus_dir)
    (d / "en" / "notes.md").write_text("mine")  # a data dir with something of the user's inside
    with pytest.raises(UserError, match="not empty and not a data dir .*'en'"):
        prepare(d, tiny_corpus_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare(empty, tiny_corpus_dir)  # an empty folder is fine
    link = tmp_path / "link"
    link.symlink_to(empty)
    prepare(link, tiny_corpus_dir)  # through a link: the folder it names is replaced, the link stays
    assert link.is_symlink() and (empty / "stats.json").exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                       check=True)
    return int(p.stdout)


def test_prepare_removes_leftovers_of_killed_runs_only(tiny_corpus_dir, tmp_path, capsys):
    from nextchar import safefs

    d = tmp_path / "d"
    prepare(d, tiny_corpus_dir)
    dead = tmp_path / f".d.prepare-{_dead_pid()}-{safefs.HOST}-abcdefgh"
    live = tmp_path / f".d.prepare-{os.getpid()}-{safefs.HOST}-ijklmnop"  # a prepare still running
    other = tmp_path / f".d.prepare-{_dead_pid()}-some-other-host-qrstuvwx"  # another machine's: not ours to judge
    for p in (dead, live, other):
        (p / "en").mkdir(parents=True)
        (p / "en" / "train.bin").write_bytes(b"x" * 1000)
    prepare(d, tiny_corpus_dir)
    assert siblings(d) == sorted([live.name, other.name])


def test_prepare_without_atomic_exchange(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    """Where renameat2 is missing, two renames; a kill between them leaves .old, which the next run restores."""
    from nextchar import safefs
    from nextchar.data import open_data

    monkeypatch.setattr(safefs, "_renameat2", None)
    d = tmp_path / "d"
    prepare(d, tiny_corpus_dir)
    stats = prepare(d, tiny_corpus_dir)
    assert siblings(d) == [] and open_data(d).stats == stats
    before = snapshot(d)
    old = tmp_path / f".d.prepare-{_dead_pid()}-{safefs.HOST}-abcdefgh.old"
    d.rename(old)  # as if killed right after the first rename
    assert safefs.clean_stale(d, "prepare") == [] and snapshot(d) == before and siblings(d) == []


def test_exchange_failure_keeps_the_old_dir(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    from nextchar import safefs

    d = tmp_path / "d"
    prepare(d, tiny_corpus_dir)
    before = snapshot(d)

    def broken(a, b):
        raise OSError(5, "Input/output error", str(b))

    monkeypatch.setattr(safefs, "exchange", broken)
    with pytest.raises(UserError, match=f"^{d}: cannot write \\(Input/output error\\); {d} is as it was"):
        prepare(d, tiny_corpus_dir)
    assert snapshot(d) == before and siblings(d) == []


def test_kill_9_during_prepare(tmp_path):
    """kill -9 at random moments: d is always the old or the new data dir, whole; the next prepare cleans up."""
    import contextlib
    import signal
    import time

    from nextchar.data import open_data

    old_corpus, new_corpus = tmp_path / "old", tmp_path / "new"
    for folder, extra in ((old_corpus, ""), (new_corpus, "ŴŵŷŶ ")):
        folder.mkdir()
        for lang, text in TINY_TEXTS.items():
            (folder / f"{lang}.txt").write_text((text + extra) * 20, encoding="utf-8")  # ~0.5 M characters
    want_new = tmp_path / "want"
    t0 = time.perf_counter()
    prepare(want_new, new_corpus)
    span = 1.3 * (time.perf_counter() - t0)  # kills land before, during and after the swap
    d = tmp_path / "d"
    prepare(d, old_corpus)
    old, new = snapshot(d), snapshot(want_new)
    new["stats.json"] = new["stats.json"].replace(str(new_corpus).encode(), b"")
    rng = random.Random(14)
    states = []
    for _ in range(4):
        pid = os.fork()  # a child that already has everything imported: the kill lands inside prepare
        if pid == 0:
            try:
                with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                    prepare(d, new_corpus)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0, span))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        now = snapshot(d)
        if "stats.json" in now:
            now["stats.json"] = now["stats.json"].replace(str(new_corpus).encode(), b"")
        assert now in (old, new)  # never a mix
        states.append("new" if now == new else "old")
        open_data(d)
        if now == new:  # start again from the old one
            prepare(d, old_corpus)
    prepare(d, new_corpus)
    assert siblings(d) == []


def test_prepare_disk_full_on_a_real_small_file_system(tiny_corpus_dir, tmp_path, small_fs, capsys):
    """A 1 MB tmpfs holds the tiny data dir, not a 1 MB language more: one-line error, exit 2, old data intact."""
    big = tmp_path / "big"
    shutil.copytree(tiny_corpus_dir, big)
    (big / "xx.txt").write_text("abc defg hij klmn opq " * 50_000, encoding="utf-8")  # 1.1 MB
    prepare(tmp_path / "d0", tiny_corpus_dir)
    r = small_fs(f"""
cp -a {tmp_path / "d0"} "$FS/d"
(cd "$FS/d" && find . -type f | sort | xargs sha256sum) > {tmp_path}/before
$PY -m nextchar prepare --corpus {big} --out "$FS/d" 2> {tmp_path}/err; echo $? > {tmp_path}/rc
(cd "$FS/d" && find . -type f | sort | xargs sha256sum) > {tmp_path}/after
ls -a "$FS" > {tmp_path}/ls
""", size_kb=1024)
    assert r.returncode == 0, r.stderr
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.match(r"error: \S+/fs/\.d\.prepare-\S+/\S+: no space left on device \(needs about [\d.]+ [MK]B, "
                    r"[\d.]+ [KM]?B free there\); \S+/fs/d is as it was$", err.strip()), err
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text()
    assert (tmp_path / "ls").read_text().split() == [".", "..", "d"]  # no staging folder left behind
