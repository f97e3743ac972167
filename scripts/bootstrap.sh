#!/usr/bin/env bash
# Install everything scrapy-gdpr needs into ./.venv, system packages included.
# Used by `make demo` and `make test`; safe to run again (it only installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Chromium for browser-rendered pages (scrapy-playwright uses the
# system browser through executable_path), and the libraries OpenCV's wheel loads.
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in libgl1 libglib2.0-0; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "Installing system packages: ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "warning: please install ${missing[*]} with your system's package manager;" \
         "tests that need a browser will be skipped" >&2
  fi
fi

# Python 3.11 or 3.12 (mediapipe 0.10.21 ships wheels for those).
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
      python=$candidate; break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "error: Python 3.11 or 3.12 is needed (mediapipe 0.10.21 has no wheels for other versions)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

# Reinstall only when the package's metadata changed.
stamp=".venv/.scrapy-gdpr-$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,docs]"
  rm -f .venv/.scrapy-gdpr-*
  touch "$stamp"
fi
