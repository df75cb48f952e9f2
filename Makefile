# `make demo`: set up the environment and run the main job on the built-in model.
# `make test`: set up the environment and run the whole test suite (what CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Static figure export (kaleido) drives a Chrome/Chromium; Debian's package is installed if none is
# found. The tests read exported PDFs with poppler's pdftotext.
BROWSER_PACKAGES := chromium fonts-liberation
PDF_PACKAGES := poppler-utils
# The site serves require.js, the Jupyter widget manager and highlight.js itself; docs/hooks.py
# fetches them, pinned, with `npm pack` when it builds the site.
NPM_PACKAGES := npm

.PHONY: setup browser pdftools npm demo test docs clean
setup: $(VENV)/.installed browser

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# $(call system_packages,NAME): where $(NAME_FOUND) fails, install the Debian packages
# $(NAME_PACKAGES) as root, or say how to get them ($(NAME_BY_HAND)).
define system_packages
	@if $($(1)_FOUND); then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $($(1)_PACKAGES) ($($(1)_FOR))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $($(1)_PACKAGES) >/dev/null; \
	else \
	    echo "$($(1)_BY_HAND)" >&2; \
	    exit 1; \
	fi
endef

BROWSER_FOUND := [ -n "$$BROWSER_PATH" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1
BROWSER_FOR := figure export
BROWSER_BY_HAND := figure export needs Chrome or Chromium: run 'sudo apt-get install $(BROWSER_PACKAGES)' (Debian/Ubuntu), \
    'brew install --cask chromium' (macOS) or '$(BIN)/plotly_get_chrome', or set BROWSER_PATH
browser:
	$(call system_packages,BROWSER)

PDF_FOUND := command -v pdftotext >/dev/null 2>&1
PDF_FOR := the tests read exported PDFs
PDF_BY_HAND := the tests read exported PDFs with pdftotext: run 'sudo apt-get install $(PDF_PACKAGES)' (Debian/Ubuntu) \
    or 'brew install poppler' (macOS)
pdftools:
	$(call system_packages,PDF)

NPM_FOUND := command -v npm >/dev/null 2>&1
NPM_FOR := the docs site serves its scripts itself
NPM_BY_HAND := the docs site fetches the scripts it serves with npm: run 'sudo apt-get install $(NPM_PACKAGES)' \
    (Debian/Ubuntu) or 'brew install node' (macOS)
npm:
	$(call system_packages,NPM)

demo: setup
	$(BIN)/causal-unlearn demo

# Two workers of one thread each: the tiny models gain little from a second thread, so two tests
# at a time nearly halve the suite on 2 cores. A test module stays on one worker (its fixtures
# run once); the longest items (the docs site, then the demo) are collected first and kept in
# that order, so that they start first. The notebooks run once, top to bottom on fresh kernels,
# when tests/test_docs.py builds the site (an error in a cell fails the build) and their pages are
# checked in a browser; `pytest --nbmake notebooks` runs them on their own, and `python
# benchmarks/notebook_cells.py` times their cells.
test: setup pdftools npm
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder \
	    tests/test_docs.py tests/test_demo.py tests causal_unlearn

# The site executes the notebooks (mkdocs-jupyter), so that its pages show their figures; it
# serves every script they load itself, so that the pages work without network.
docs: setup npm
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache site causal_unlearn_report
