#!/usr/bin/env python3
"""Screenshots of every dashboard page from a running embedded cloud, into docs/ui/.

    .venv/bin/vimha up --detach                    # or any running cloud's --data-dir
    .venv/bin/vimha chaos power-off cmp-2          # optional: something to see
    .venv/bin/python scripts/ui-screenshots.py [--data-dir .vimha] [--out docs/ui]

Logs in with the cloud's operator token (`vimha token --role operator`) in Debian's
chromium driven by Playwright (`make install-test` installs both), saves <page>.png for each
page and prints, per page, its weight (bytes transferred, compressed) and load time as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from vimha.api.ui.pages import PAGES

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
WEIGHT = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  return {
    bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
    decodedBytes: nav.decodedBodySize + res.reduce((n, r) => n + r.decodedBodySize, 0),
    requests: 1 + res.length,
    loadMs: Math.round(nav.loadEventEnd - nav.startTime),
    domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd - nav.startTime),
  };
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".vimha"))
    parser.add_argument("--out", type=Path, default=Path("docs/ui"))
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    url = (args.data_dir / "api-url").read_text().strip()
    token_file = args.data_dir / "operator-token"
    if not token_file.exists():
        token_file = args.data_dir / "admin-token"
    token = token_file.read_text().strip()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": args.width, "height": 900})
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(f"{url}/ui/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/*")
        session = context.storage_state()  # the session cookie
        shown = page.locator("header.top nav a").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )  # the pages whose data exists in this cloud (SDN: with --netns)
        for each in [p for p in PAGES if f"/ui/{p.slug}" in shown]:
            # a fresh context per page (the session only): its weight with a cold cache
            cold = browser.new_context(
                viewport={"width": args.width, "height": 900}, storage_state=session
            )
            cold.set_default_timeout(60_000)
            page = cold.new_page()
            page.goto(f"{url}/ui/{each.slug}")
            page.wait_for_load_state("load")
            page.wait_for_timeout(500)  # the live stream connected, fonts laid out
            figures[each.slug] = page.evaluate(WEIGHT)
            page.screenshot(path=str(args.out / f"{each.slug}.png"), full_page=True)
            cold.close()
        browser.close()
    json.dump(figures, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
