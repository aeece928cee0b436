"""The admin token file, read (and made on first use) by the controller, `vimha up` and
`vimha chaos`: a module of its own so that they need not import the controller for it (its
import takes a second or two of a starting cloud)."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("vimha.controller")
ADMIN_ENV = "VIMHA_ADMIN_TOKEN"


def admin_token_from_file(path: Path) -> str:
    """Read the admin token file, creating it (0600) with a fresh token, or with
    $VIMHA_ADMIN_TOKEN when set, if it does not exist."""
    env = os.environ.get(ADMIN_ENV)
    if path.exists():
        token = path.read_text().strip()
        if env and env != token:
            return env
        return token
    token = env or secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.info("generated an admin token in %s (mode 0600)", path)
    return token
