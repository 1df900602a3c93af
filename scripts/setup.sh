#!/usr/bin/env bash
# Installs everything layerdb and its tests need on a fresh Debian/Ubuntu machine:
# skopeo and umoci (apt; they build and convert the test images), docker-registry and
# apache2-utils (apt; a real registry and htpasswd for the registry tests) and layerdb itself
# with its test dependencies (pip, editable). Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in skopeo umoci docker-registry; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# (re)install when anything is missing or the installed layerdb is another checkout's
here=$(cd src/layerdb && pwd -P)
there=$("$PY" -c "import os, layerdb, pytest, hypothesis, xdist, duckdb, pyarrow, zstandard, isal, rich
print(os.path.dirname(os.path.realpath(layerdb.__file__)))" 2>/dev/null || true)
if [ "$there" != "$here" ] || ! command -v layerdb >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
fi
