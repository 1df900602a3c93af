"""Whether a process runs: how ingest workers notice their parent is gone, and how stale
staging directories (``tmp/ingest-<pid>-...``) of killed ingests are told from live ones."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
