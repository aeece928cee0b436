"""Servers that run as an OS user of their own (mysql, postgres, rabbitmq) when vimha is root:
can that user reach a folder at all?"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


def unreachable(path: Path, user: str) -> Path | None:
    """The first folder above `path` that `user` may not pass through (no search permission),
    None when every one lets it through."""
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for folder in reversed(path.resolve().parents):
        try:
            st = folder.stat()
        except FileNotFoundError:
            continue  # made later, by vimha: searchable by all
        if entry.pw_uid == 0 or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_uid == entry.pw_uid and st.st_mode & stat.S_IXUSR:
            continue
        if st.st_gid in groups and st.st_mode & stat.S_IXGRP:
            continue
        return folder
    return None


def reach_hint(path: Path, user: str) -> str | None:
    """Why `user` cannot reach `path`, with the fix; None if it can."""
    blocked = unreachable(path, user)
    if blocked is None:
        return None
    return (
        f"the {user} user cannot reach {path}: {blocked} does not let it through "
        f"(chmod o+x {blocked}, or choose a folder it can reach)"
    )
