"""Process helpers: rank answers without a process group, thread counts, device names; no torch import needed."""

import subprocess
import sys

import pytest

from nextchar import runtime
from nextchar.errors import UserError


def test_single_process_is_rank_zero_of_one(capsys):
    assert (runtime.rank(), runtime.world(), runtime.is_main()) == (0, 1, True)
    runtime.print0("hello", 3)
    assert capsys.readouterr().out == "hello 3\n"


def test_threads_resolve(monkeypatch):
    assert runtime.resolve_threads(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert runtime.resolve_threads(0) == runtime.cores() >= 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * runtime.cores()))
    assert runtime.resolve_threads(0) == 1
    with pytest.raises(UserError, match="--threads -1"):
        runtime.resolve_threads(-1)


def test_rank_and_cpu_device_questions_never_import_torch():
    code = ("import sys; from nextchar import runtime; "
            "assert (runtime.rank(), runtime.world(), runtime.resolve_device('cpu')) == (0, 1, 'cpu'); "
            "assert 'cores' in runtime.device_name('cpu'); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
