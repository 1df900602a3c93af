# Sourced by the other scripts (not run): where layerdb's own virtual environment is.
# VENV: $LAYERDB_VENV, else ./.venv in the checkout. Its bin/ goes first on PATH, so `python`,
# `layerdb`, `pytest`, `ruff` and `mypy` below are the ones installed into it by setup.sh.
VENV=${LAYERDB_VENV:-$PWD/.venv}
case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
export VIRTUAL_ENV=$VENV
export PATH="$VENV/bin:$PATH"
