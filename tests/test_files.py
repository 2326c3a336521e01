"""File helpers: atomic writes keep the old file on failure, JSON errors name the file, hashes are SHA-256."""

import hashlib
import json
import os

import pytest

from nextchar import files
from nextchar.errors import UserError


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.json"
    files.atomic_write_json(p, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        files.atomic_write_json(p, {"v": Boom()})
    assert json.loads(p.read_text()) == {"v": 1}
    assert list(tmp_path.iterdir()) == [p]


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    files.atomic_write_bytes(tmp_path / "sub" / "x.bin", b"abc")
    (tmp_path / "plain.bin").write_bytes(b"abc")
    assert (tmp_path / "sub" / "x.bin").read_bytes() == b"abc"
    assert os.stat(tmp_path / "sub" / "x.bin").st_mode == os.stat(tmp_path / "plain.bin").st_mode


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.json: run config not found"):
        files.read_json(tmp_path / "nope.json", "run config")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match=r"bad\.json: unreadable state"):
        files.read_json(tmp_path / "bad.json", "state")
    (tmp_path / "ok.json").write_text('{"a": [1, "é"]}', encoding="utf-8")
    assert files.read_json(tmp_path / "ok.json") == {"a": [1, "é"]}


def test_sha256_file_is_the_digest_of_the_bytes(tmp_path):
    data = os.urandom(3 << 20)  # several read blocks
    (tmp_path / "b").write_bytes(data)
    assert files.sha256_file(tmp_path / "b") == hashlib.sha256(data).hexdigest()
