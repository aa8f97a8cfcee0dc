"""``kdanomaly review`` in a real headless Chromium driven over the DevTools protocol: decisions made with the mouse
and the keyboard land in decisions.jsonl, a decision the server cannot take is shown and saved by a retry, and
after a restart the page shows every decision and resumes at the first undecided image."""

from __future__ import annotations

import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from kdanomaly.review.decisions import Decision, append_decision, read_decisions
from kdanomaly.review.server import ReviewServer, serve
from tests.support import fake_review_run

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (the dev extra has it)")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--remote-debugging-port=0",
    "--window-size=1280,900",
]  # fmt: skip
PAGE_STATE = """({
  current: (document.querySelector('#queue li[aria-current="true"]') || {dataset: {}}).dataset.key || null,
  items: Array.from(document.querySelectorAll('#queue li'), (li) => [li.dataset.key, li.dataset.state,
    li.dataset.type]),
  shown: Array.from(document.querySelectorAll('#queue li')).filter((li) => li.getClientRects().length)
    .map((li) => li.dataset.key),
  progress: document.getElementById('progress').textContent,
  pending: document.body.dataset.pending,
  failed: document.body.dataset.failed || '0',
  banner: document.getElementById('banner').hidden ? '' : document.getElementById('banner').textContent,
  overlay: document.getElementById('overlay').naturalWidth,
  focus: document.activeElement.id,
  types: Array.from(document.querySelectorAll('#known-types option'), (option) => option.value),
})"""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """``condition()``'s first truthy value, polled; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


NAVIGATING = "Inspected target navigated or closed"  # DevTools' answer to a call that raced a page load


class Navigating(Exception):
    """A DevTools call reached the page while it was being replaced by a load."""


class DevTools:
    """A minimal Chrome DevTools Protocol client of one page: commands, and the page's errors kept as they come."""

    def __init__(self, socket_url: str) -> None:
        self.socket = websocket.create_connection(socket_url, timeout=15, suppress_origin=True)
        self.calls = 0
        self.errors: list[str] = []  # uncaught exceptions and Content-Security-Policy refusals

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                if message.get("error", {}).get("message") == NAVIGATING:
                    raise Navigating(method)
                assert "error" not in message, message["error"]
                return message["result"]
            self._keep_errors(message)

    def _keep_errors(self, event: dict[str, Any]) -> None:
        if event.get("method") == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(event["params"]["exceptionDetails"])[:500])
        elif event.get("method") == "Log.entryAdded" and "Content Security Policy" in event["params"]["entry"]["text"]:
            self.errors.append(event["params"]["entry"]["text"])

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def state(self) -> dict[str, Any]:
        return self.evaluate(PAGE_STATE)

    def click(self, selector: str) -> None:
        """A left click with the mouse in the middle of the element."""
        x, y = self.evaluate(
            f"(() => {{ const element = document.querySelector({json.dumps(selector)});"
            " element.scrollIntoView({block: 'center'}); const box = element.getBoundingClientRect();"
            " return [box.x + box.width / 2, box.y + box.height / 2]; })()"
        )
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def press(self, key: str) -> None:
        """One key stroke: a character, or ``Enter``."""
        if key == "Enter":
            stroke = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}
        else:
            code = "Space" if key == " " else f"Key{key.upper()}"
            stroke = {"key": key, "code": code, "windowsVirtualKeyCode": ord(key.upper()), "text": key}
        self.call("Input.dispatchKeyEvent", type="keyDown", **stroke)
        self.call("Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in stroke.items() if k != "text"})

    def type(self, text: str) -> None:
        for character in text:
            self.press(character)

    def open(self, url: str | None = None) -> None:
        """Load ``url`` (None: reload this page) and wait until the page has loaded its queue."""
        self.evaluate("document.body && delete document.body.dataset.ready")
        if url is None:
            self.call("Page.reload")
        else:
            self.call("Page.navigate", url=url)
        wait_until(self._loaded, "the queue")

    def _loaded(self) -> bool:
        """Whether the page has loaded its queue; False while the load is still replacing the old page."""
        try:
            return bool(self.evaluate("document.body && document.body.dataset.ready === 'true'"))
        except Navigating:
            return False


@contextmanager
def chromium(profile: Path) -> Iterator[DevTools]:
    """Headless Chromium with one blank page, driven through :class:`DevTools`."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("headless Chromium is not installed (make test installs Debian's chromium)")
    command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), "Chromium to start", timeout=30)
        port = port_file.read_text().split()[0]
        with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            page = next(target for target in json.load(answer) if target["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        try:
            yield tools
        finally:
            tools.socket.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running(run: Path, port: int = 0) -> Iterator[ReviewServer]:
    """The review server of ``run`` serving in a thread until the block ends (then shut down, as by Ctrl-C)."""
    server = serve(run, port=port)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_review_in_chromium_saves_every_decision_and_resumes_after_a_restart(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rows = fake_review_run(run, review=6, passed=1, defect_types=["dent"])
    keys = [row["key"] for row in rows if row.get("decision") == "review"]
    append_decision(run, Decision.new(keys[0], "defect", "scratch"))  # reviewed before this session

    def decisions() -> dict[str, tuple[str, str | None]]:
        return {key: (stored.decision, stored.type) for key, stored in read_decisions(run).items()}

    def settled() -> dict[str, Any]:
        return wait_until(lambda: (state := browser.state())["pending"] == "0" and state, "the decisions to be sent")

    with chromium(tmp_path / "profile") as browser:
        with running(run) as server:
            port = server.server_address[1]
            browser.open(server.url)
            state = browser.state()
            assert state["current"] == keys[1]  # resumes at the first undecided image
            assert state["progress"].startswith("reviewed 1 / queued 6")
            wait_until(lambda: browser.state()["overlay"] == 64, "the overlay, 64 px wide, from the run folder")
            assert state["types"] == ["dent", "scratch"]

            browser.click("#false-alarm")
            wait_until(lambda: keys[1] in decisions(), "the mouse's false alarm")
            assert decisions()[keys[1]] == ("false_alarm", None) and settled()["current"] == keys[2]

            browser.press("j")
            assert browser.state()["current"] == keys[3]
            browser.press("k")
            assert browser.state()["current"] == keys[2]
            browser.press("d")
            assert browser.state()["focus"] == "type-input"
            browser.type("hairline crack")  # replaces the predicted type the field offers
            browser.press("Enter")
            wait_until(lambda: keys[2] in decisions(), "the typed defect")
            assert decisions()[keys[2]] == ("defect", "hairline crack")
            assert settled()["current"] == keys[3]

            browser.press("s")
            wait_until(lambda: keys[3] in decisions(), "the skip")
            browser.press("k")
            browser.press("f")  # changes the skip
            wait_until(lambda: decisions()[keys[3]] == ("false_alarm", None), "the changed decision")
            browser.press("k")
            browser.press("f")  # the same decision again
            state = settled()
            assert state["current"] == keys[4] and not state["banner"]
            assert len((run / "decisions.jsonl").read_text().splitlines()) == 5  # the repeat appended nothing

            browser.evaluate("(select => { select.value = 'defect'; select.dispatchEvent(new Event('change')); })"
                             "(document.getElementById('state-filter'))")  # fmt: skip
            assert browser.state()["shown"] == [keys[0], keys[2]]
            browser.evaluate("(select => { select.value = 'all'; select.dispatchEvent(new Event('change')); })"
                             "(document.getElementById('state-filter'))")  # fmt: skip
            browser.click(f'#queue li[data-key="{keys[4]}"]')  # the filter moved away from it: pick it in the list
            assert browser.state()["current"] == keys[4]

        browser.press("d")  # the server is gone: the decision must be reported, not dropped
        browser.type("dent")
        browser.press("Enter")
        state = wait_until(lambda: (state := browser.state())["failed"] == "1" and state, "the error banner")
        assert "NOT saved" in state["banner"] and "#5 part_04.png: defect: dent" in state["banner"]
        assert [row[1] for row in state["items"] if row[0] == keys[4]] == ["undecided"] and keys[4] not in decisions()

        with running(run, port) as server:
            browser.click("#retry")
            wait_until(lambda: keys[4] in decisions(), "the retried decision")
            assert decisions()[keys[4]] == ("defect", "dent") and not settled()["banner"]

            browser.open()  # reload: the page starts again from what the server stored
            state = browser.state()
            expected = {
                keys[0]: ["defect", "scratch"], keys[1]: ["false_alarm", ""], keys[2]: ["defect", "hairline crack"],
                keys[3]: ["false_alarm", ""], keys[4]: ["defect", "dent"], keys[5]: ["undecided", ""],
            }  # fmt: skip
            assert {key: [decision, type_name] for key, decision, type_name in state["items"]} == expected
            assert state["current"] == keys[5] and state["progress"].startswith("reviewed 5 / queued 6")
            assert set(state["types"]) == {"dent", "scratch", "hairline crack"}
        browser.call("Runtime.evaluate", expression="0")  # take in the events still queued
        assert browser.errors == []


def test_review_command_prints_the_address_serves_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    fake_review_run(tmp_path / "run", review=2)
    command = [sys.executable, "-m", "kdanomaly.cli", "review", str(tmp_path / "run"), "--port", "0"]
    # Ctrl-C's default action in the child even when this test runs in a background job, which ignores SIGINT
    restore = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    try:
        assert process.stdout is not None
        printed = ""
        while not (found := re.search(r"open (http://127\.0\.0\.1:\d+/\?token=\S+)", printed)):
            line = process.stdout.readline()
            assert line, f"the command ended before printing its address: {printed}"
            printed += line
        assert "reviewing 2 images" in printed and "decisions.jsonl" in printed
        token = (tmp_path / "run" / "review-token").read_text().strip()
        with urlopen(found[1], timeout=10) as page:
            assert page.status == 200 and token in found[1] and token in page.read().decode()
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, errors[-2000:]
    assert "stopped" in rest
