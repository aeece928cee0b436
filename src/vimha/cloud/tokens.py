"""The embedded cloud's tokens for people: besides the admin token (`admin-token`), an
operator's and a reader's, kept next to it (0600) so that the dashboard and the API can be
tried with each role: `vimha token --role operator`."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

ROLES = ("operator", "reader")


def token_path(data_dir: Path, role: str) -> Path:
    return data_dir / f"{role}-token"


def role_tokens(data_dir: Path) -> list[dict[str, Any]]:
    """The operator's and the reader's tokens as `auth.tokens` entries, created if missing."""
    out = []
    for role in ROLES:
        path = token_path(data_dir, role)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            try:
                fd = os.open(path, flags, stat.S_IRUSR | stat.S_IWUSR)
            except FileExistsError:  # another process made it meanwhile
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_urlsafe(32) + "\n")
        out.append({"name": role, "token": path.read_text().strip(), "role": role})
    return out
