"""Logging set-up shared by every vimha process."""

from __future__ import annotations

import logging


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; vimha logs what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
