"""Children of the embedded cloud end with their parent: a process started in its own session
(so that a terminal's Ctrl-C reaches only `vimha up`, which then stops everything in order)
must not outlive a parent that was killed outright."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

ENV = "VIMHA_EXIT_WITH_PARENT"


def watch_parent(on_gone: Callable[[], object], every: float = 0.5) -> None:
    """If $VIMHA_EXIT_WITH_PARENT is set, call `on_gone` once the parent process is gone."""
    if not os.environ.get(ENV):
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        on_gone()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
