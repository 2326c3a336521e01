"""HTTP service: the predict contract, validation and limits (never a 500), sessions, concurrency, real uvicorn."""

import asyncio
import concurrent.futures
import json
import random
import re
import socket

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nextchar import engine
from nextchar.adapt import AdaptiveSession
from nextchar.cli import app as cli_app
from nextchar.serve import MAX_BATCH, bind, create_app, server_process

torch.set_num_threads(1)

PREFIXES = ["", "Hello wor", "שלום עו", "Привет, ми", "القاهرة هي", "北京是", "Good morning! ☀️", "\U0001D11E",
            "x" * 400, "trailing space "]
WORD = "vizqubel"


@pytest.fixture(scope="module")
def pred(tiny_run):
    return engine.load(tiny_run)


@pytest.fixture(scope="module")
def client(pred):
    # raise_server_exceptions: any 500 fails the test with the real error instead of passing unnoticed
    with TestClient(create_app(pred, max_sessions=3), raise_server_exceptions=True) as c:
        yield c


def as_pairs(preds):
    return [(p["char"], p["prob"]) for p in preds]


def same(got, want):
    assert [c for c, _ in got] == [c for c, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=1e-4, atol=1e-6)


def test_predict_equals_the_plain_model(client, pred):
    for prefix in PREFIXES:
        for k in (1, 3, 10):
            r = client.post("/v1/predict", json={"prefix": prefix, "k": k})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == pred.run_id and body["adapted"] is False
            same(as_pairs(body["predictions"]), pred.topk(prefix, k))
    assert len(client.post("/v1/predict", json={"prefix": "a"}).json()["predictions"]) == 3  # k defaults to 3


def test_batch_gives_one_list_per_prefix(client, pred):
    r = client.post("/v1/predict/batch", json={"prefixes": PREFIXES, "k": 2})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert len(rows) == len(PREFIXES)
    for row, want in zip(rows, pred.topk_batch(PREFIXES, 2)):
        same(as_pairs(row), want)
    assert client.post("/v1/predict/batch", json={"prefixes": []}).json()["predictions"] == []
    ok = client.post("/v1/predict/batch", json={"prefixes": ["a"] * MAX_BATCH, "k": 1})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == MAX_BATCH


@pytest.mark.parametrize("body, status, says", [
    ({"prefix": "a", "k": 0}, 422, "k"),
    ({"prefix": "a", "k": 11}, 422, "k"),
    ({"prefix": "a", "k": "3"}, 422, "k"),
    ({"prefix": "a", "k": 2.0}, 422, "k"),
    ({"prefix": "a", "k": True}, 422, "k"),
    ({"prefix": None}, 422, "prefix"),
    ({"prefix": 5}, 422, "prefix"),
    ({}, 422, "prefix"),
    ({"prefx": "a"}, 422, "prefix"),
    ({"prefix": "a", "session": "no spaces"}, 422, "session"),
    ({"prefix": "a", "session": "x" * 65}, 422, "session"),
    ([1, 2], 422, "JSON object"),
    ("just a string", 422, "JSON object"),
])
def test_bad_requests_get_422_with_a_message(client, body, status, says):
    r = client.post("/v1/predict", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"] and "Traceback" not in r.text


@pytest.mark.parametrize("raw", [
    b"not json", b'{"prefix": "a"', b"", b"\xff\xfe{", b'{"prefix": "a", "k": NaN}', b'{"prefix": "a", "k": 1e999}',
    b'{"prefix": "a", "\\ud800": 1}', b"[" * 30000 + b"]" * 30000,
])
def test_malformed_bodies_get_422(client, raw):
    r = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] and "Traceback" not in r.text


def test_any_unicode_prefix_is_fine(client):
    for prefix in ["\ud800", "\x00\x01", "\u202e\u200f", "🏳️‍🌈" * 50, "a\r\nb\tc"]:
        raw = json.dumps({"prefix": prefix}).encode()  # ASCII escapes: a lone surrogate survives as \ud800
        r = client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text


def test_limits_on_size(client):
    big = {"prefix": "x" * 70_000}
    assert client.post("/v1/predict", json=big).status_code == 413
    r = client.post("/v1/predict/batch", json={"prefixes": ["a"] * (MAX_BATCH + 1)})
    assert r.status_code == 422 and "prefixes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(100):
            yield b"x" * 1000

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    r = client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json", "content-length": "x"})
    assert r.status_code == 400


def test_unknown_paths_and_methods_are_json_errors(client):
    assert client.get("/nope").json() == {"error": "Not Found"}
    assert client.get("/v1/predict").status_code == 405


def test_health_docs_and_page(client, pred):
    assert client.get("/healthz").json()["model"] == pred.run_id
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text  # Swagger UI from the server itself
    assert all(client.get(u).status_code == 200 for u in
               re.findall(r'(?:src|href)="(/[^"]+)"', docs.text))
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/session/observe", "/healthz"} <= set(spec["paths"])
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="text" dir="auto"' in page.text
    assert page.text.count('class="sugg word"') == 3 and page.text.count('class="sugg char"') == 3
    js = client.get("/static/keyboard.js")
    assert js.status_code == 200 and "v1/predict" in js.text and "v1/complete" in js.text and "␣" in js.text


def test_sessions_adapt_independently(client, pred):
    prefix = WORD[:-2]
    client.post("/v1/session/observe", json={"session": "s-alice", "text": f"{WORD} {WORD} {WORD}"})
    client.post("/v1/session/observe", json={"session": "s-bob", "text": "The quick brown fox."})
    alice = client.post("/v1/predict", json={"prefix": prefix, "session": "s-alice", "k": 5}).json()
    bob = client.post("/v1/predict", json={"prefix": prefix, "session": "s-bob", "k": 5}).json()
    plain = client.post("/v1/predict", json={"prefix": prefix, "k": 5}).json()
    assert alice["adapted"] and bob["adapted"] and not plain["adapted"]
    assert alice["predictions"][0]["char"] == WORD[-2] and alice["predictions"] != bob["predictions"]
    same(as_pairs(plain["predictions"]), pred.topk(prefix, 5))
    # what the server answers is what an AdaptiveSession with the same history answers
    ref = AdaptiveSession(pred)
    ref.observe(f"{WORD} {WORD} {WORD}")
    same(as_pairs(alice["predictions"]), ref.topk(prefix, 5))
    r = client.post("/v1/session/forget", json={"session": "s-alice"})
    assert r.json() == {"session": "s-alice", "history_chars": 0}
    after = client.post("/v1/predict", json={"prefix": prefix, "session": "s-alice", "k": 5}).json()
    same(as_pairs(after["predictions"]), AdaptiveSession(pred).topk(prefix, 5))


def test_sessions_are_bounded(client):
    for i in range(5):
        assert client.post("/v1/predict", json={"prefix": "a", "session": f"many-{i}"}).status_code == 200
    assert client.get("/healthz").json()["sessions"] == 3  # max_sessions=3: the oldest were dropped
    r = client.post("/v1/session/observe", json={"session": "many-4", "text": "y" * 30_000})
    assert r.status_code == 200 and r.json()["history_chars"] == 20_000


def test_concurrent_clients_get_their_own_answers(client, pred):
    """Many threads at once, plain and adapted, must each get exactly the answer for their own request."""
    rng = random.Random(0)
    histories = {f"c{i}": f"{WORD[:i + 2]} " * 3 for i in range(3)}
    for sid, text in histories.items():
        client.post("/v1/session/forget", json={"session": sid})
        client.post("/v1/session/observe", json={"session": sid, "text": text})
    refs = {}
    for sid, text in histories.items():
        refs[sid] = AdaptiveSession(pred)
        refs[sid].observe(text)
    jobs = [(rng.choice(PREFIXES + [WORD[:3], WORD[:5]]), rng.choice([None, *histories])) for _ in range(120)]

    def call(job):
        prefix, sid = job
        body = {"prefix": prefix, "k": 4} | ({"session": sid} if sid else {})
        return client.post("/v1/predict", json=body).json()["predictions"]

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        answers = list(ex.map(call, jobs))
    for (prefix, sid), got in zip(jobs, answers):
        same(as_pairs(got), refs[sid].topk(prefix, 4) if sid else pred.topk(prefix, 4))


def test_real_uvicorn_server(tiny_run, pred):
    with server_process(tiny_run) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("healthz").json()["status"] == "ok"
            same(as_pairs(c.post("v1/predict", json={"prefix": "Hello wor"}).json()["predictions"]),
                 pred.topk("Hello wor", 3))
            assert c.post("v1/predict", json={"prefix": "a", "k": 99}).status_code == 422
            assert c.post("v1/predict", content=b"x" * 100_000).status_code == 413
            assert "nextchar" in c.get("/").text

        async def many():
            async with httpx.AsyncClient(base_url=url, timeout=30) as ac:
                rs = await asyncio.gather(*[ac.post("v1/predict", json={"prefix": p, "k": 3})
                                            for p in PREFIXES * 4])
            return [r.json()["predictions"] for r in rs]

        for prefix, got in zip(PREFIXES * 4, asyncio.run(many())):
            same(as_pairs(got), pred.topk(prefix, 3))


def test_cli_serve_reports_a_taken_port(tiny_run):
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # else asyncio skips TCP_NODELAY: +40 ms per keep-alive request
        port = sock.getsockname()[1]
        r = CliRunner().invoke(cli_app, ["serve", "--run", str(tiny_run), "--port", str(port)])
        assert r.exit_code == 2 and "cannot listen" in r.output
        r = CliRunner().invoke(cli_app, ["serve", "--run", str(tiny_run), "--port", "70000"])
        assert r.exit_code == 2 and "--port" in r.output
    finally:
        sock.close()


def test_answers_escape_the_characters_some_readers_take_for_line_breaks(tiny_ngram_run, tmp_path):
    """Every JSON answer goes through files.dumps: a model id (a folder name) with U+2028, U+2029 or U+0085 is
    escaped, never raw, so the answer stays one line for str.splitlines() and old JavaScript."""
    import shutil

    folder = tmp_path / "ng\u2028a\u2029b\x85c"
    shutil.copytree(tiny_ngram_run, folder)
    with TestClient(create_app(folder), raise_server_exceptions=True) as c:
        for path, body in (("/v1/predict", {"prefix": "a\u2028b"}), ("/v1/predict/batch", {"prefixes": ["a", "b"]}),
                           ("/v1/complete", {"prefix": "Hello wo"}), ("/healthz", None), ("/v1/keys", None)):
            r = c.post(path, json=body) if body is not None else c.get(path)
            assert r.status_code == 200, r.text
            assert not {"\u2028", "\u2029", "\x85"} & set(r.content.decode("utf-8")), path
            assert len(r.content.decode("utf-8").splitlines()) == 1 and r.json()["model"] == folder.name
        ok = c.post("/v1/session/observe", json={"session": "s", "text": "x\u2028y"})
        assert ok.status_code == 200 and ok.json()["history_chars"] == 4  # START, x, \n, y


def test_predictions_carry_unknown_share(client):
    body = client.post("/v1/predict", json={"prefix": "日本語のテキスト"}).json()
    assert body["unknown_share"] == 1.0 and body["mostly_unknown"] is True
    body = client.post("/v1/predict", json={"prefix": "Hello wor"}).json()
    assert body["unknown_share"] == 0.0 and body["mostly_unknown"] is False
    body = client.post("/v1/complete", json={"prefix": "नमस्ते दुनिया"}).json()
    assert body["unknown_share"] == round(12 / 13, 4) and body["mostly_unknown"] is True
