#!/usr/bin/env bash
# What tests/test_browser.py needs, installed when missing:
#   - the playwright Python package pinned in requirements-browser.txt, into $PY (default .venv/bin/python);
#   - a Chromium: $CHROMIUM if set, else one on PATH, else Debian's `chromium` package via apt-get (root only).
# Playwright drives that Chromium through `executable_path`; `playwright install` (its own browser download
# from a CDN) is never used.
# Exit status: 0 ready (the last line is "chromium: PATH"); 3 cannot install here (says what to install);
# anything else: an install that should have worked failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PIN=$(grep -E '^playwright==' requirements-browser.txt)

cannot() {
  echo "browser_deps: cannot install $1 here: $2" >&2
  echo "browser_deps: to run the browser test, install $1 yourself, e.g. $3" >&2
  exit 3
}

have_playwright() {
  "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('playwright') != '${PIN#playwright==}')" 2>/dev/null
}

find_chromium() {
  local c
  if [ -n "${CHROMIUM:-}" ]; then command -v "$CHROMIUM"; return; fi
  for c in chromium chromium-browser google-chrome-stable google-chrome; do
    command -v "$c" 2>/dev/null && return 0
  done
  return 1
}

if ! have_playwright; then
  echo "browser_deps: installing $PIN into $PY"
  # PIP_ARGS: e.g. "--no-index --find-links wheelhouse" offline
  # shellcheck disable=SC2086
  timeout 600 "$PY" -m pip install -q --disable-pip-version-check ${PIP_ARGS:-} -r requirements-browser.txt \
    || cannot "$PIN" "pip install failed (no access to PyPI?)" "$PY -m pip install -r requirements-browser.txt"
  have_playwright || { echo "browser_deps: $PIN still not importable by $PY" >&2; exit 1; }
fi

if ! find_chromium >/dev/null; then
  [ -n "${CHROMIUM:-}" ] && cannot chromium "CHROMIUM=$CHROMIUM is not an executable" "unset CHROMIUM"
  command -v apt-get >/dev/null || cannot chromium "no apt-get (not Debian/Ubuntu)" \
    "your system's chromium package, then CHROMIUM=/path/to/chromium"
  [ "$(id -u)" = 0 ] || cannot chromium "apt-get needs root" "sudo apt-get install chromium"
  echo "browser_deps: installing Debian's chromium (apt-get; a minute or two)"
  export DEBIAN_FRONTEND=noninteractive
  # an image's package lists are often empty or stale: update once if the first try fails
  timeout 900 apt-get install -y -q --no-install-recommends chromium fonts-noto-color-emoji >/dev/null \
    || { timeout 300 apt-get update -q >/dev/null \
         && timeout 900 apt-get install -y -q --no-install-recommends chromium fonts-noto-color-emoji >/dev/null; } \
    || cannot chromium "apt-get install chromium failed" "apt-get update && apt-get install chromium"
  find_chromium >/dev/null || { echo "browser_deps: chromium installed but not on PATH" >&2; exit 1; }
fi
echo "chromium: $(find_chromium | head -1)"
