"""Shared fixtures: a tiny multilingual corpus (many scripts) and a data dir prepared from it."""

from __future__ import annotations

from pathlib import Path

import pytest

# A few real-looking paragraphs per language; _repeat() makes each file >= MIN_CHARS characters.
PARAGRAPHS: dict[str, list[str]] = {
    "en": [
        ("The quick brown fox jumps over the lazy dog. Every morning, the old librarian opened the windows and let "
        "the cold air into the reading room. She believed that books, like people, needed to breathe."),
        ("Dasher is a text-entry interface driven by continuous pointing gestures. It is useful wherever a full-size "
        "keyboard cannot be used: on a palmtop computer, with one hand, or with an eye tracker."),
        ("\"Would you like some tea?\" asked Mr. Jones at half past four. \"Yes, please - two sugars and a little "
        "milk,\" replied his guest, who had walked 12 miles that day."),
    ],
    "fr": [
        ("Le vieux château dominait la vallée depuis plus de huit siècles. Chaque été, des milliers de touristes "
        "montaient jusqu'à ses remparts pour admirer le paysage."),
        ("Où est la boulangerie la plus proche ? Il faut tourner à gauche après l'église, puis continuer tout droit "
        "jusqu'à la place du marché. C'est à deux minutes à pied."),
        ("Noël approche : les enfants écrivent leurs lettres, et les rues s'illuminent de guirlandes. À la fenêtre, "
        "une bougie brûle doucement ; l'hiver sera long, mais personne ne s'en plaint."),
    ],
    "ru": [
        ("Москва — столица России и один из крупнейших городов Европы. Летом в парках гуляют семьи с детьми, а "
        "зимой на катках звучит музыка."),
        ("Вчера я прочитал интересную книгу о путешествиях. Автор рассказывает, как он прошёл пешком через всю "
        "Сибирь и встретил много добрых людей."),
        "«Где ты был так долго?» — спросила мама. «Я помогал соседу чинить забор», — ответил мальчик и улыбнулся.",
    ],
    "el": [
        ("Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις του κόσμου. Κάθε χρόνο "
        "χιλιάδες επισκέπτες ανεβαίνουν στην Ακρόπολη."),
        ("Το καλοκαίρι πηγαίνουμε στα νησιά για να κολυμπήσουμε στη θάλασσα. Το νερό είναι καθαρό και ζεστό, και ο "
        "ήλιος λάμπει όλη τη μέρα."),
        "Πού είναι ο σταθμός του μετρό; Συγγνώμη, δεν ξέρω. Ρωτήστε τον αστυνομικό στη γωνία.",
    ],
    "he": [
        "ירושלים היא עיר עתיקה עם היסטוריה ארוכה ומרתקת. בכל שנה מגיעים אליה מבקרים רבים מכל העולם.",
        "אתמול הלכנו לים עם החברים שלנו. המים היו חמים והשמש זרחה כל היום, ואכלנו ארוחת ערב על החוף.",
        "מה השעה עכשיו? השעה שלוש וחצי, ואנחנו צריכים לצאת בעוד עשר דקות.",
    ],
    "ar": [
        ("القاهرة هي عاصمة مصر وأكبر مدنها. يعيش فيها ملايين الناس، ويزورها السياح من كل أنحاء العالم لرؤية "
        "الأهرامات."),
        "في الصباح أشرب القهوة وأقرأ الجريدة قبل الذهاب إلى العمل. الطريق مزدحم دائما في هذا الوقت.",
        "هل تتكلم العربية؟ نعم، قليلا. تعلمتها في المدرسة منذ سنوات طويلة.",
    ],
    "bn": [
        "ঢাকা বাংলাদেশের রাজধানী এবং সবচেয়ে বড় শহর। এখানে প্রতিদিন লক্ষ লক্ষ মানুষ কাজ করতে আসে।",
        "আমি সকালে চা খাই এবং খবরের কাগজ পড়ি। তারপর আমি বাসে করে অফিসে যাই।",
        "তুমি কেমন আছ? আমি ভালো আছি, ধন্যবাদ। আজ আবহাওয়া খুব সুন্দর।",
    ],
    "zh": [
        "北京是中国的首都，也是一座有着三千多年历史的古城。每年都有很多游客来这里参观故宫和长城。",
        "今天早上我去市场买了一些水果和蔬菜。天气很好，阳光明媚，街上的人很多。",
        "你好吗？我很好，谢谢。你周末有空吗？我们一起去看电影吧。",
    ],
    "emoji": [
        "Good morning! ☀️ Coffee first ☕ and then work 💻. Happy birthday 🎂🎉 to my best friend 👩‍❤️‍👨!",
        "Let's go to the beach 🏖️🌊 this weekend 😎👍🏽. I'll bring snacks 🍕🍩 and you bring the music 🎶.",
        "Travel plans: Paris 🇫🇷, Tokyo 🇯🇵 and Rio 🇧🇷 ✈️. Can't wait! 😂😂 Love you all ❤️.",
    ],
}
MIN_CHARS = 2600


def _repeat(paragraphs: list[str], min_chars: int = MIN_CHARS) -> str:
    out: list[str] = []
    while len("\n\n".join(out)) < min_chars:
        out.extend(paragraphs)
    return "\n\n".join(out) + "\n"


# lang -> file contents (paragraphs separated by blank lines); normalize() turns "\n\n" into "\n".
TINY_TEXTS: dict[str, str] = {lang: _repeat(paras) for lang, paras in PARAGRAPHS.items()}


def write_corpus(folder: Path, texts: dict[str, str] = TINY_TEXTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, text in texts.items():
        (folder / f"{lang}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_corpus_dir(tmp_path: Path) -> Path:
    """A fresh folder of <lang>.txt files (TINY_TEXTS); tests may modify it."""
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """prepare() of TINY_TEXTS (min_count 2), shared by the session: treat it as read-only."""
    from nextchar.corpus import prepare

    root = tmp_path_factory.mktemp("tiny")
    out = root / "data"
    prepare(out, write_corpus(root / "corpus"))
    return out


def _train_tiny(data: Path, folder: Path, **model) -> Path:
    """A tiny Transformer trained a few dozen steps on the tiny corpus (a real run directory)."""
    import torch

    from nextchar.config import load
    from nextchar.train import train

    torch.set_num_threads(1)
    cfg = load("tiny")
    for k, v in model.items():
        setattr(cfg.model, k, v)
    cfg.train.max_steps = 40
    cfg.train.lr = 1e-2
    cfg.train.threads = 1
    cfg.train.device = "cpu"
    run = folder / "run"
    train(data, run, cfg, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_run(tiny_data_dir, tmp_path_factory):
    return _train_tiny(tiny_data_dir, tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_hash_run(tiny_data_dir, tmp_path_factory):
    """tiny_run's shape with hashed 2..3-gram inputs."""
    return _train_tiny(tiny_data_dir, tmp_path_factory.mktemp("tiny_hash_run"), ngram_buckets=64, ngram_order=3)


@pytest.fixture(scope="session")
def tiny_ngram_run(tiny_data_dir, tmp_path_factory):
    """An order-4 Kneser-Ney n-gram run of the tiny corpus."""
    from nextchar.train_ngram import train_ngram

    out = tmp_path_factory.mktemp("tiny_ngram") / "ngram"
    train_ngram(tiny_data_dir, out, order=4, final_positions=100)
    return out


@pytest.fixture(scope="session")
def tiny_counts(tiny_data_dir, tmp_path_factory):
    """The language-aware count model of the tiny corpus (order 5, a 24-character posterior window)."""
    from nextchar.counts import CountsConfig, PosteriorConfig
    from nextchar.train_counts import train_counts

    out = tmp_path_factory.mktemp("tiny_counts") / "counts"
    train_counts(tiny_data_dir, out, CountsConfig(order=5, posterior=PosteriorConfig(window=24)))
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory):
    """tiny_run exported to ONNX (fp32, parity-checked by export itself)."""
    from nextchar.export import export

    out = tmp_path_factory.mktemp("tiny_onnx") / "onnx"
    export(tiny_run, out, positions=0, parity_prefixes=100)
    return out


@pytest.fixture
def fail_at_batch(monkeypatch):
    """Arm the training sampler to raise `exc` on its n-th batch (Ctrl-C or a crash mid-run), once.

    Later calls go through, so the same test can resume training afterwards.
    """
    from nextchar.data import BatchSampler

    orig = BatchSampler.next_batch

    def arm(n: int, exc: BaseException | type[BaseException] = KeyboardInterrupt) -> None:
        calls = {"n": 0}

        def next_batch(self):
            calls["n"] += 1
            if calls["n"] == n:
                raise exc
            return orig(self)

        monkeypatch.setattr(BatchSampler, "next_batch", next_batch)

    return arm


def _namespace_cmd() -> list[str] | None:
    """How to get a private mount namespace here: `unshare -m` as root, else a user namespace `unshare -rm`."""
    import os
    import shutil
    import subprocess

    if not shutil.which("unshare") or not shutil.which("mount"):
        return None
    for cmd in (["unshare", "-m"], ["unshare", "-rm"]) if os.geteuid() == 0 else (["unshare", "-rm"],):
        probe = subprocess.run([*cmd, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True,
                               check=False)
        if probe.returncode == 0:
            return cmd
    return None


@pytest.fixture
def small_fs(tmp_path):
    """run(script, size_kb) runs a bash script with $FS a fresh tmpfs of size_kb KB, private to that script (its
    own mount namespace, gone when it exits): a real file system that fills up, for disk-full tests. $PY is this
    Python with this checkout's nextchar. Skips where mount namespaces are not allowed."""
    import os
    import subprocess
    import sys

    cmd = _namespace_cmd()
    if cmd is None:
        pytest.skip("no mount namespace (unshare -m / -rm) for a small tmpfs here")
    fs = tmp_path / "fs"
    fs.mkdir()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, FS=str(fs), PY=sys.executable,
               PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))

    def run(script: str, size_kb: int) -> subprocess.CompletedProcess:
        full = f"set -u\nmount -t tmpfs -o size={size_kb}k tmpfs \"$FS\"\n{script}"
        return subprocess.run([*cmd, "bash", "-c", full], env=env, capture_output=True, text=True, check=False,
                              timeout=300)

    return run
