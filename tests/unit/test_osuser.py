"""Can a server's OS user reach its folder (vimha/osuser.py)? Checked on real folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vimha.osuser import reach_hint, unreachable


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vimha-osuser-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_private_folder_on_the_way_is_named_with_the_fix(base: Path) -> None:
    (base / "private").mkdir(mode=0o700)
    (base / "private").chmod(0o700)
    target = base / "private" / "data" / "db"
    assert unreachable(target, "nobody") == base / "private"
    why = reach_hint(target, "nobody")
    assert why is not None and f"chmod o+x {base / 'private'}" in why


def test_folders_open_to_others_or_owned_by_the_user_let_it_through(base: Path) -> None:
    (base / "open").mkdir()
    (base / "open").chmod(0o711)
    (base / "owned").mkdir(mode=0o700)
    (base / "owned").chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(base / "owned", "nobody")
        assert unreachable(base / "owned" / "x", "nobody") is None
    assert unreachable(base / "open" / "not-yet" / "x", "nobody") is None
    assert reach_hint(base / "open" / "x", "nobody") is None
    assert unreachable(base / "private" / "x", "root") is None  # root passes everywhere
