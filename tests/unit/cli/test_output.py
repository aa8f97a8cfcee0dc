"""What the kdanomaly command prints besides its output: third-party warnings only with -v, each log line once."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest

from kdanomaly.cli.output import configure_output, take_verbose_flag


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Undo configure_output's changes to the root logger and the named loggers after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: logging.getLogger(name).level for name in ("anomalib", "anomalib.cli.utils.openvino")}
    yield
    root.handlers[:], root.level = handlers, level
    for name, named_level in named.items():
        logging.getLogger(name).setLevel(named_level)


def test_the_verbose_flag_is_taken_out_wherever_it_stands() -> None:
    assert take_verbose_flag(["inspect", "-v", "x.png", "--verbose"]) == (["inspect", "x.png"], True)
    assert take_verbose_flag(["inspect", "x.png"]) == (["inspect", "x.png"], False)


def _warn_from(module: str) -> None:
    warnings.warn_explicit("deprecated", FutureWarning, filename=f"{module}.py", lineno=1, module=module)


@pytest.mark.usefixtures("restored_logging")
def test_quiet_output_hides_third_party_warnings_but_not_ours() -> None:
    logging.getLogger("anomalib").setLevel(logging.INFO)  # as an earlier Anomalib run in the same process leaves it
    with warnings.catch_warnings(record=True) as caught:
        configure_output(verbose=False, run_logs=False)
        _warn_from("timm.models.layers")
        _warn_from("kdanomaly.models.kdad.torch_model")
    assert [w.filename for w in caught] == ["kdanomaly.models.kdad.torch_model.py"]
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger("anomalib").getEffectiveLevel() == logging.WARNING


@pytest.mark.usefixtures("restored_logging")
def test_verbose_output_shows_everything_and_anomalib_runs_keep_their_logs() -> None:
    with warnings.catch_warnings(record=True) as caught:
        configure_output(verbose=True, run_logs=False)
        _warn_from("timm.models.layers")
    assert len(caught) == 1 and logging.getLogger().level == logging.INFO
    with warnings.catch_warnings():
        configure_output(verbose=False, run_logs=True)
    assert logging.getLogger("anomalib").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("anomalib.cli.utils.openvino").getEffectiveLevel() == logging.WARNING
