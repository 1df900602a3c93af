#!/usr/bin/env bash
# Installs everything layerdb and its tests need on a fresh Debian/Ubuntu machine, with only
# the distribution's python3 (PEP 668: its site-packages is managed by apt, so pip installs go
# into a virtual environment of the project's own):
#   - skopeo, umoci and buildah (apt; they build and convert the test images; buildah runs
#     daemonless on vfs storage in a temporary directory), docker-registry and
#     apache2-utils (apt; a real registry and htpasswd for the registry tests), and python3-venv (apt)
#     when `python3 -m venv` cannot make an environment;
#   - a virtual environment, ./.venv (or $LAYERDB_VENV), made by $PYTHON (default: python3);
#   - layerdb itself into it, editable, with its test and dev tools (pip install -e .[test,dev]).
# Afterwards: `. .venv/bin/activate` puts `layerdb` on PATH. Safe to run again: it skips what
# is there, and remakes the environment when $PYTHON is another interpreter than the one
# that made it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || { echo "setup.sh: no $PY (set PYTHON)" >&2; exit 1; }

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need_apt=()
for tool in skopeo umoci buildah docker-registry; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
# Debian/Ubuntu ship venv without ensurepip unless python3-venv is installed
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  need_apt+=(python3-venv)
  apt-cache show "python$ver-venv" >/dev/null 2>&1 && need_apt+=("python$ver-venv")
fi
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup.sh: apt-get install ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

. scripts/_venv.sh
base=$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.layerdb-base" 2>/dev/null)" != "$base" ]; then
  echo "setup.sh: $VENV was made by another interpreter; remaking it with $base" >&2
  rm -rf "$VENV"
fi
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  echo "$base" > "$VENV/.layerdb-base"
fi

# (re)install when anything is missing or the installed layerdb is another checkout's
here=$(cd src/layerdb && pwd -P)
there=$("$VENV/bin/python" -c "import os, layerdb, pytest, hypothesis, xdist, duckdb, pyarrow, zstandard, isal, rich, click, ruff, mypy, elftools
print(os.path.dirname(os.path.realpath(layerdb.__file__)))" 2>/dev/null || true)
if [ "$there" != "$here" ] || [ ! -x "$VENV/bin/layerdb" ]; then
  echo "setup.sh: pip install -e .[test,dev] into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,dev]"
fi
