#!/usr/bin/env bash
# Set up (scripts/setup.sh: the project's virtual environment), then run the whole test suite
# with its python. Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/test_cli.py`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/_venv.sh
rc=0
python -m pytest -q -n 2 "$@" || rc=$?
if [ "$rc" = 5 ]; then  # pytest: no tests were collected; that is no pass
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
