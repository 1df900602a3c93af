"""Fake docker credential helpers for tests: ``docker-credential-NAME`` programs (Python
scripts) written into a directory the test puts first on ``PATH``. Each logs its argv and the
stdin it got (one JSON line a run, in ``NAME.calls``) and then does what ``mode`` says."""
from __future__ import annotations

import json
import sys
from pathlib import Path

NOT_FOUND = "credentials not found in native keychain"

BODIES = {
    # the credentials, for the server URL it was asked about
    "answer": "print(json.dumps({'ServerURL': url, 'Username': USER, 'Secret': SECRET}))",
    "not-found": f"print({NOT_FOUND!r}); sys.exit(1)",
    "fail": "print('keychain is locked'); print('more detail', file=sys.stderr); sys.exit(1)",
    "garbled": "print('{\"Username\": \"' + USER + '\", \"Secret\": \"' + SECRET + '\"')",  # cut short
    "slow": "time.sleep(30)",
    "huge": "sys.stdout.write(json.dumps({'Username': USER, 'Secret': SECRET + 'x' * (1 << 20)}))",
    "list": "print(json.dumps([USER, SECRET]))",
}


def write_helper(bindir: Path, name: str, mode: str = "answer", user: str = "",
                 secret: str = "") -> Path:
    """``bindir/docker-credential-NAME``, executable."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / f"docker-credential-{name}"
    log = bindir / f"{name}.calls"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, time\n"
        f"USER, SECRET = {user!r}, {secret!r}\n"
        "url = sys.stdin.read()\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'stdin': url}) + '\\n')\n"
        "if sys.argv[1:] != ['get']:\n"
        "    print('unknown action', sys.argv[1:]); sys.exit(2)\n"
        + BODIES[mode] + "\n")
    path.chmod(0o755)
    return path


def calls(bindir: Path, name: str) -> list[dict]:
    """Every run of helper ``name`` so far: {"argv": [...], "stdin": "..."}."""
    log = bindir / f"{name}.calls"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]
