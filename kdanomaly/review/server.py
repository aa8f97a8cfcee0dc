"""``kdanomaly review RUN``: a local web page to review an inspection run's queue, decisions saved as they are made.

A stdlib threading HTTP server, by default on 127.0.0.1 only. Every request needs the run's token (``?token=`` on
a GET, a ``token`` field in a POST body), so other web pages the browser shows cannot read the queue or post
decisions. The token is made once per run and kept in ``RUN/review-token`` (owner-only), so the page's address
stays valid when the server is restarted.

- ``GET /?token=T``: the page (``page.html``, the token written into it).
- ``GET /api/queue?token=T``: the images sent to review, in results order, each with its current decision;
  progress counts; the known defect types (``run.json`` ``defect_types`` and the types of stored decisions).
- ``POST /api/decisions``, JSON ``{token, key, decision, type}`` (at most 64 KB): the stored decision.
- ``GET /files/<path>?token=T``: a file inside the run folder (overlays, thumbnails); nothing outside it, not
  through ``..`` or a symbolic link, and not the token file.

GETs never change anything; decisions go through :func:`kdanomaly.review.decisions.append_decision`.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import mimetypes
import os
import secrets
import tempfile
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .decisions import DECISION_KINDS, Decision, append_decision, read_decisions

TOKEN_FILE = "review-token"
RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "run.json"
MAX_BODY_BYTES = 64 * 1024
QUEUE_FIELDS = ("rank", "key", "path", "score", "width", "height", "regions", "overlay", "thumbnail")
WILDCARD_HOSTS = ("", "0.0.0.0")
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)  # the page reaches nothing but this server


@dataclass(frozen=True)
class ReviewRun:
    """What the server needs of a run folder: its results rows and the defect types the station already knows."""

    folder: Path  # resolved
    rows: list[dict[str, Any]]  # results.jsonl, highest score first
    station_types: list[str]  # run.json "defect_types"

    @property
    def queue(self) -> list[dict[str, Any]]:
        """The rows sent to review, in results order."""
        return [row for row in self.rows if row.get("status") == "ok" and row.get("decision") == "review"]


def load_run(run: Path) -> ReviewRun:
    """Read ``run``'s results and settings; ValueError for a folder without results.jsonl or with a broken one."""
    folder = Path(run).resolve()
    results = folder / RESULTS_FILE
    if not results.is_file():
        raise ValueError(
            f"{run} holds no {RESULTS_FILE}: review needs the folder of a finished `kdanomaly inspect ... --out` run"
        )
    rows = []
    for number, line in enumerate(results.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError as error:
            raise ValueError(f"{results}, line {number}: not JSON ({error})") from error
        if row is not None:
            if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                raise ValueError(f"{results}, line {number}: not a result row with a key")
            rows.append(row)
    settings_file = folder / SETTINGS_FILE
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    types = settings.get("defect_types", []) if isinstance(settings, dict) else []
    if not isinstance(types, list) or not all(isinstance(name, str) for name in types):
        raise ValueError(f"{settings_file}: defect_types must be a list of names, got {types!r}")
    return ReviewRun(folder, rows, types)


def run_token(run: Path) -> str:
    """The run's review token: read from ``RUN/review-token``, or made and written there (mode 0600) the first time.

    The new file is published whole by a hard link, so two servers starting at once agree on one token.
    """
    path = Path(run) / TOKEN_FILE
    if not path.exists():
        descriptor, temporary = tempfile.mkstemp(prefix=f".{TOKEN_FILE}.", dir=run)  # created 0600
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another server made it first: use theirs
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise ValueError(f"{path} is empty: delete it and a new token is made")
    return token


def queue_state(run: ReviewRun) -> dict[str, Any]:
    """The ``/api/queue`` answer: ``rows`` (queue rows, each with ``reviewed``: its decision or None),
    ``progress`` (queued, reviewed and the count of each decision) and the known defect ``types``."""
    decisions = read_decisions(run.folder)
    rows = []
    for row in run.queue:
        stored = decisions.get(row["key"])
        reviewed = stored.as_row() if stored is not None else None
        rows.append({field: row.get(field) for field in QUEUE_FIELDS} | {"reviewed": reviewed})
    counts = Counter(row["reviewed"]["decision"] for row in rows if row["reviewed"])
    progress = {"queued": len(rows), "reviewed": sum(counts.values())} | {kind: counts[kind] for kind in DECISION_KINDS}
    used = sorted({decision.type for decision in decisions.values() if decision.type is not None})
    types = list(dict.fromkeys(run.station_types + used))  # the station's order first, then new names
    return {"run": run.folder.name, "rows": rows, "progress": progress, "types": types}


def run_file(folder: Path, relative: str) -> Path:
    """The file that the decoded URL path ``relative`` names inside the resolved run ``folder``.

    PermissionError if it leaves the folder (``..``, an absolute path, a symbolic link out) or is the token file;
    FileNotFoundError if there is no such file.
    """
    parts = PurePosixPath(relative)
    if "\x00" in relative or "\\" in relative or parts.is_absolute() or ".." in parts.parts:
        raise PermissionError(f"{relative!r} is not a path inside the run folder")
    try:
        target = (folder / relative).resolve()
    except (OSError, RuntimeError) as error:  # a symbolic link loop (RuntimeError before Python 3.13)
        raise FileNotFoundError(f"no file {relative!r} in the run folder") from error
    if not target.is_relative_to(folder) or target == folder / TOKEN_FILE:
        raise PermissionError(f"{relative!r} is not a file of the run folder")
    if not target.is_file():
        raise FileNotFoundError(f"no file {relative!r} in the run folder")
    return target


def render_page(token: str, title: str) -> bytes:
    """The review page with its token and title written in (both HTML-escaped)."""
    page = files("kdanomaly.review").joinpath("page.html").read_text(encoding="utf-8")
    return page.replace("{{token}}", html.escape(token)).replace("{{title}}", html.escape(title)).encode()


class ReviewServer(ThreadingHTTPServer):
    """The review server of one run (``run``), answering with :class:`ReviewHandler`; ``url`` opens the page."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], run: ReviewRun, token: str) -> None:
        super().__init__(address, ReviewHandler)
        self.run = run
        self.token = token
        self.keys = frozenset(row["key"] for row in run.rows)
        self.page = render_page(token, f"Review of {run.folder.name}")

    @property
    def url(self) -> str:
        """The page's address, with the token (a wildcard bind is shown as 127.0.0.1)."""
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in WILDCARD_HOSTS else str(host)
        return f"http://{shown}:{port}/?token={self.token}"

    def token_matches(self, given: object) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())


class ReviewHandler(BaseHTTPRequestHandler):
    """The endpoints of the module docstring. Errors are JSON ``{"error": message}`` with their status."""

    server: ReviewServer
    timeout = 30  # seconds a client may take to send its request
    server_version = "kdanomaly-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """No request log: the addresses carry the token."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self.server.token_matches(parse_qs(url.query).get("token", [""])[0]):
            self._error(403, "missing or wrong token: open the address that `kdanomaly review` printed")
        elif url.path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_POLICY})
        elif url.path == "/api/queue":
            self._json(200, queue_state(self.server.run))
        elif url.path.startswith("/files/"):
            self._file(unquote(url.path.removeprefix("/files/")))
        else:
            self._error(404, f"no such page: {url.path}")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/api/decisions":
            self._error(404, "decisions are posted to /api/decisions")
            return
        body = self._body()
        if body is None:
            return
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:
            self._error(400, f"the body is not JSON: {error}")
            return
        if not isinstance(payload, dict):
            self._error(400, "the body must be a JSON object {token, key, decision, type}")
        elif not self.server.token_matches(payload.get("token")):
            self._error(403, "missing or wrong token: reload the page from the address `kdanomaly review` printed")
        elif not isinstance(payload.get("key"), str) or payload["key"] not in self.server.keys:
            self._error(404, f"no image with key {payload.get('key')!r} in this run")
        else:
            self._decide(payload)

    def _decide(self, payload: dict[str, Any]) -> None:
        try:
            decision = Decision.new(payload["key"], payload.get("decision"), payload.get("type"))
        except ValueError as error:
            self._error(422, str(error))
            return
        try:
            stored = append_decision(self.server.run.folder, decision)
        except OSError as error:
            self._error(500, f"the decision was not saved: {error}")
            return
        self._json(200, {"decision": stored.as_row()})

    def _body(self) -> bytes | None:
        """The request body, or None once an error has been sent (no length, too long, not JSON, not received)."""
        length = self.headers.get("Content-Length")
        if length is None:
            self._error(411, "a Content-Length is required")
        elif not length.isdigit():
            self._error(400, f"bad Content-Length {length!r}")
        elif int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"the body is {length} bytes; at most {MAX_BODY_BYTES} are taken")
        elif self.headers.get_content_type() != "application/json":
            self._error(415, "the body must be application/json")
        else:
            try:
                return self.rfile.read(int(length))
            except OSError:
                self.close_connection = True
        return None

    def _file(self, relative: str) -> None:
        try:
            target = run_file(self.server.run.folder, relative)
            data = target.read_bytes()
        except PermissionError as error:
            self._error(403, str(error))
            return
        except OSError as error:  # missing, a folder, a name too long
            self._error(404, str(error))
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(200, data, kind, {"Cache-Control": "private, max-age=600"})

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        fields = {"Cache-Control": "no-store"} | (headers or {})
        fields |= {"Content-Type": content_type, "Content-Length": str(len(body))}
        fields |= {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
        for name, value in fields.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def serve(run: Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> ReviewServer:
    """A review server for ``run`` bound to ``host``:``port`` (0: any free port), not yet serving: call its
    ``serve_forever`` (``shutdown`` stops it). ``token`` defaults to the run's own (:func:`run_token`).

    ValueError for a folder that is not a finished run; OSError if the address cannot be bound.
    """
    loaded = load_run(run)
    if token is not None and not token:
        raise ValueError("the review token must not be empty")
    return ReviewServer((host, port), loaded, token or run_token(loaded.folder))
