#!/usr/bin/env bash
# Set up (scripts/setup.sh: the project's virtual environment), then run the whole test suite
# with its python. Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/test_cli.py`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/_venv.sh
# A temporary directory of this run's own: pytest's clean-up of older runs' directories under
# the shared /tmp/pytest-of-$USER recurses (shutil.rmtree on python 3.11) and fails on the
# 4,000-level trees hostile-path tests make; GNU rm removes this one at the end.
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/layerdb-test.XXXXXX")
trap 'rm -rf "$run_tmp"' EXIT
export TMPDIR=$run_tmp
rc=0
python -m pytest -q -n 2 "$@" || rc=$?
if [ "$rc" = 5 ]; then  # pytest: no tests were collected; that is no pass
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
