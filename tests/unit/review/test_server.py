"""The review server on a hand-made run: loopback only, run-folder files only, token on every request, decisions
checked before they are stored, GETs change nothing."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from kdanomaly.review.decisions import DECISIONS_FILE, Decision, append_decision, read_decisions
from kdanomaly.review.server import MAX_BODY_BYTES, TOKEN_FILE, ReviewServer, serve
from tests.support import fake_review_run

SECRET = "outside the run folder"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    fake_review_run(tmp_path / "run", review=3, passed=1, defect_types=["dent", "crack"])
    (tmp_path / "secret.txt").write_text(SECRET)
    return tmp_path / "run"


@pytest.fixture
def server(run: Path) -> Iterator[ReviewServer]:
    server = serve(run)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _request(
    server: ReviewServer, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    """Send ``target`` exactly as written (no client-side path clean-up): status, body, response."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def _get(server: ReviewServer, target: str, token: str | None = None) -> tuple[int, bytes]:
    query = "" if token is None else ("&" if "?" in target else "?") + f"token={quote(token)}"
    status, body, _ = _request(server, "GET", target + query)
    return status, body


def _post(server: ReviewServer, payload: object, content_type: str = "application/json") -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, body, _ = _request(server, "POST", "/api/decisions", data, {"Content-Type": content_type})
    return status, json.loads(body)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path): (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def test_listens_on_loopback_and_keeps_one_token_per_run(server: ReviewServer, run: Path) -> None:
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}/?token={server.token}"
    token_file = run / TOKEN_FILE
    assert token_file.read_text().strip() == server.token and len(server.token) >= 32
    assert token_file.stat().st_mode & 0o077 == 0  # owner only
    second = serve(run)
    second.server_close()
    assert second.token == server.token  # a restarted server keeps the page's address valid


def test_page_and_api_need_the_token(server: ReviewServer) -> None:
    for target in ("/", "/api/queue", "/files/overlays/part_00_0123456789.jpg"):
        assert _get(server, target)[0] == 403
        assert _get(server, target, "wrong")[0] == 403
    status, page, response = _request(server, "GET", f"/?token={server.token}")
    assert status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert f'content="{server.token}"'.encode() in page
    assert "default-src 'none'" in response.getheader("Content-Security-Policy", "")
    assert b"http://" not in page and b"https://" not in page and b"//cdn" not in page  # nothing from outside


def test_only_files_inside_the_run_folder_are_served(server: ReviewServer, run: Path, tmp_path: Path) -> None:
    overlay = "overlays/part_00_0123456789.jpg"
    status, body, response = _request(server, "GET", f"/files/{overlay}?token={server.token}")
    assert status == 200 and body == (run / overlay).read_bytes()
    assert response.getheader("Content-Type") == "image/jpeg"
    (run / "overlays" / "link.txt").symlink_to(tmp_path / "secret.txt")
    (run / "outside").symlink_to(tmp_path)
    (run / "overlays" / "inside.jpg").symlink_to(run / overlay)
    assert _get(server, "/files/overlays/inside.jpg", server.token) == (200, (run / overlay).read_bytes())
    refused = [
        "/files/../secret.txt",
        "/files/overlays/../../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/%2E%2E%2Fsecret.txt",
        "/files/overlays%2f..%2f..%2fsecret.txt",
        f"/files/{quote(str(tmp_path / 'secret.txt'), safe='')}",
        f"/files/{tmp_path / 'secret.txt'}",
        "/files/overlays/link.txt",
        "/files/outside/secret.txt",
        f"/files/{TOKEN_FILE}",
        "/files/overlays/%00.jpg",
    ]
    for target in refused:
        status, body = _get(server, target, server.token)
        assert status == 403, target
        assert SECRET.encode() not in body and server.token.encode() not in body
    for target in ("/files/overlays/missing.jpg", "/files/overlays", "/files/"):
        assert _get(server, target, server.token)[0] == 404, target


def test_posted_decisions_are_checked_then_stored(server: ReviewServer, run: Path) -> None:
    key = "/station/images/part_01.png"
    good = {"token": server.token, "key": key, "decision": "defect", "type": " hairline "}
    bad = [
        ({k: v for k, v in good.items() if k != "token"}, 403),
        (good | {"token": "wrong"}, 403),
        (good | {"token": 12}, 403),
        (good | {"key": "/station/images/elsewhere.png"}, 404),
        (good | {"key": ["not", "a", "key"]}, 404),
        (good | {"decision": "maybe"}, 422),
        (good | {"type": None}, 422),
        (good | {"type": "  "}, 422),
        (good | {"type": "x" * 65}, 422),
        (good | {"decision": "skip", "type": "dent"}, 422),
        (b'{"token": "' + server.token.encode() + b'", "key": ', 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe", 400),
    ]
    for payload, status in bad:
        answer = _post(server, payload)
        assert answer[0] == status, (payload, answer)
        assert answer[1]["error"]
    assert _post(server, good, content_type="text/plain")[0] == 415
    assert not (run / DECISIONS_FILE).exists()
    status, answer = _post(server, good)
    assert status == 200 and answer["decision"]["type"] == "hairline"
    assert read_decisions(run) == {key: Decision(**answer["decision"])}
    assert _post(server, good)[1] == answer  # the same click twice: stored once
    assert len((run / DECISIONS_FILE).read_text().splitlines()) == 1


@pytest.mark.parametrize(("length", "status"), [(str(MAX_BODY_BYTES + 1), 413), ("-5", 400), (None, 411)])
def test_oversized_or_unmeasured_bodies_are_refused_unread(
    server: ReviewServer, length: str | None, status: int
) -> None:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    connection.putrequest("POST", "/api/decisions")
    connection.putheader("Content-Type", "application/json")
    if length is not None:
        connection.putheader("Content-Length", length)
    connection.endheaders()  # no body: the server must answer without waiting for one
    try:
        assert connection.getresponse().status == status
    finally:
        connection.close()


def test_queue_lists_the_review_rows_with_their_decisions(server: ReviewServer, run: Path) -> None:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    sent = [row for row in rows if row.get("decision") == "review"]
    append_decision(run, Decision.new(sent[1]["key"], "defect", "hairline"))
    append_decision(run, Decision.new(sent[2]["key"], "skip"))
    status, body = _get(server, "/api/queue", server.token)
    queue = json.loads(body)
    assert status == 200
    assert [row["key"] for row in queue["rows"]] == [row["key"] for row in sent]
    assert [row["reviewed"] and row["reviewed"]["decision"] for row in queue["rows"]] == [None, "defect", "skip"]
    assert queue["rows"][0]["overlay"] == sent[0]["overlay"] and queue["rows"][0]["regions"] == sent[0]["regions"]
    assert queue["progress"] == {"queued": 3, "reviewed": 2, "defect": 1, "false_alarm": 0, "skip": 1}
    assert queue["types"] == ["dent", "crack", "hairline"]  # the station's, then those of decisions


def test_gets_never_change_the_run_folder(server: ReviewServer, run: Path) -> None:
    before = _snapshot(run)
    for target in ("/", "/api/queue", "/files/overlays/part_00_0123456789.jpg", "/files/../secret.txt", "/nothing"):
        _get(server, target, server.token)
        _get(server, target)
    _request(server, "GET", f"/api/decisions?token={server.token}&key=x&decision=skip")
    assert _snapshot(run) == before
    assert not (run / DECISIONS_FILE).exists()


def test_a_folder_without_results_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"holds no results\.jsonl"):
        serve(tmp_path)
