# Both targets create the virtual environment on first use (about 3 minutes, ~5 GB with PyTorch).
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast browser

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kdanomaly demo

# Headless Chromium renders the inspection report in the tests (Debian's package; skipped if it cannot be had).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: the report test will be skipped"

# Everything: ruff, mypy on kdanomaly/, then both tiers (tests/unit and tests/integration; the integration tier
# takes minutes on CPU).
test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

# The unit tier only (under 2 minutes on 2 CPU cores): no training, no extra processes, no browser.
test-fast: $(STAMP)
	$(VENV)/bin/pytest tests/unit
