"""``kdanomaly review``'s own refusals: no run in the folder, an address already taken."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdanomaly.cli import main
from kdanomaly.review.server import serve
from tests.support import fake_review_run


def test_a_folder_without_results_is_refused_and_left_untouched(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")  # an inspect run that never finished
    with pytest.raises(SystemExit, match=r"kdanomaly review: .* holds no results\.jsonl"):
        main(["review", str(tmp_path), "--port", "0"])
    assert [path.name for path in tmp_path.iterdir()] == ["run.json"]  # not even a token written


def test_a_port_in_use_is_refused_with_the_way_out(tmp_path: Path) -> None:
    fake_review_run(tmp_path)
    taken = serve(tmp_path)
    try:
        with pytest.raises(SystemExit, match=r"cannot listen on 127\.0\.0\.1:\d+ .*--port"):
            main(["review", str(tmp_path), "--port", str(taken.server_address[1])])
    finally:
        taken.server_close()
