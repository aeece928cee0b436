"""The maintenance page (issue 19's sessions): every session with its state, one of them
(`?id=`, else the newest) with its hosts, plan, migrations, VNFMs' answers and history;
and, for whoever the API lets do it (`ROLE`, as `POST /vim/v1/maintenance`: admin), the
forms that start a session (or only show its plan), abort one and say a host's maintenance
is done. They call the engine as the API's routers do (`rt.maintenance`); a reader or an
operator sees the sessions and no control, and their POSTs are refused (403)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vimha.api.ui import session
from vimha.api.ui.incidents import when
from vimha.domain.errors import Conflict, InvalidInput, NotFound
from vimha.domain.maintenance import FINAL, Phase, Session
from vimha.engine.maintenance import SessionRequest
from vimha.engine.runtime import Runtime

if TYPE_CHECKING:  # pages.py imports this module
    from vimha.api.ui.pages import Page, Renderer

log = logging.getLogger("vimha.ui")
ROLE = "admin"  # the API's: creating and aborting a session is an admin's
LISTED = 100
HOSTS_MAX = 1000
NO_STORE = {"Cache-Control": "no-store", "Vary": "HX-Request, HX-Target"}
FINAL_STATES = frozenset(p.value for p in FINAL)


def row(s: Mapping[str, Any]) -> dict[str, Any]:
    states = s["hostStates"]
    return {
        "id": s["id"],
        "short": s["id"][:8],
        "hosts": s["hosts"],
        "state": s["state"],
        "final": s["state"] in FINAL_STATES,
        "current": s.get("currentHost"),
        "done": sum(1 for h in s["hosts"] if states.get(h) in ("DONE", "SKIPPED")),
        "createdBy": s["createdBy"],
        "created": when(s["createdAt"]),
        "start": when(s["startAt"]),
        "reason": s.get("reason") or "",
        "waiting": s.get("waiting") or "",
    }


def detail(view: Mapping[str, Any], vnf_names: Mapping[str, str]) -> dict[str, Any]:
    """A session's view for its page; the VNFs told by name (their id when gone)."""
    states = view["hostStates"]
    return {
        **row(view),
        "hostStates": [(h, states.get(h, "PENDING")) for h in view["hosts"]],
        "deadline": when(view.get("deadline")),
        "vnfs": [vnf_names.get(v, v) for v in view.get("vnfs", [])],
        "acting": sorted(view.get("acting", {}).items()),
        "plan": plan_view(view.get("plan") or {}),
        "migrations": [
            {
                "instance": m["instanceName"],
                "kind": m["kind"],
                "from": m["source"],
                "to": m["dest"] or "",
                "state": m["state"],
                "reason": m["reason"] or "",
                "at": when(m["updatedAt"]),
            }
            for m in view.get("migrations", [])
        ],
        "inputs": [
            {
                "at": when(i["at"]),
                "kind": i["kind"],
                "by": i["by"],
                "about": vnf_names.get(i.get("vnfId") or "", i.get("vnfId") or "")
                or i.get("host")
                or "",
                "state": i.get("state") or "",
                "actions": ", ".join(f"{k}: {v}" for k, v in i["instanceActions"].items()),
            }
            for i in view.get("inputs", [])
        ],
        "history": [{"at": when(h["at"]), "reason": h["reason"]} for h in view["history"]],
    }


def plan_view(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A plan (a session's, or a dry run's) as the page shows it."""
    return {
        "feasible": bool(plan.get("feasible", True)),
        "refusals": list(plan.get("refusals", [])),
        "hosts": [
            {
                "host": h["host"],
                "instances": [
                    {
                        "name": i["name"] or i["instanceId"],
                        "policy": i["migrationPolicy"],
                        "default": i["defaultAction"],
                        "to": i["expectedHost"] or "",
                        "reason": i["reason"],
                    }
                    for i in h["instances"]
                ],
            }
            for h in plan.get("hosts", [])
        ],
    }


def parse_hosts(text: str) -> tuple[str, ...]:
    """Host names separated by commas or spaces, in the order given, each once."""
    names = [n for n in re.split(r"[\s,]+", text.strip()) if n]
    return tuple(dict.fromkeys(names))[:HOSTS_MAX]


def parse_window(text: str) -> float | None:
    """Seconds a host stays in maintenance once empty (empty: until said done)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"host window: {text!r} is not a number of seconds") from None
    if not 0 <= value <= 7 * 86400:
        raise InvalidInput("host window: between 0 and 604800 seconds")
    return value


async def page(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    wanted = params.get("id", "").strip()[:64]
    state = params.get("state", "").strip().upper()[:30]

    def reads() -> tuple[list[Session], dict[str, Any] | None, dict[str, str]]:
        every = rt.store.maintenance.sessions(None)
        every.sort(key=lambda s: s.created_at, reverse=True)
        chosen = next((s for s in every if s.id == wanted), None)
        if chosen is None and not wanted and every:
            chosen = every[0]
        names = {v.id: v.name for v in rt.store.compute.vnfs()} if chosen else {}
        return every, rt.maintenance.view(chosen) if chosen else None, names

    every, chosen, names = await asyncio.to_thread(reads)
    rows = [row(s.to_dict()) for s in every]
    shown = [r for r in rows if not state or r["state"] == state][:LISTED]
    busy = {h for r in rows if not r["final"] for h in r["hosts"]}
    hosts = sorted(rt.host_views())
    return {
        "sessions": shown,
        "total": len(rows),
        "active": sum(1 for r in rows if not r["final"]),
        "selected": detail(chosen, names) if chosen else None,
        "unknown": wanted if wanted and chosen is None else None,
        "filters": {"state": state, "id": wanted},
        "states": [p.value for p in Phase],
        "hostNames": [h for h in hosts if h not in busy],
        "role": ROLE,
    }


def marker(rt: Runtime) -> str:
    """Each session's state and version (every round that changes it saves a new one)."""
    return ",".join(
        f"{s.id}:{s.state.value}:{s.version}" for s in rt.store.maintenance.sessions(None)
    )


def routes(rt: Runtime, renderer: Renderer, this: Callable[[], Page]) -> APIRouter:
    """The forms' POST routes; `this()` is this page's `pages.Page`. Each answers, to htmx,
    the page's body again (the session it acted on selected) and its outcome in #flash."""
    router = APIRouter()

    async def answer(
        request: Request,
        who: session.Viewer,
        notice: tuple[str, str],
        selected: str = "",
        plan: dict[str, Any] | None = None,
    ) -> Response:
        here = f"{session.PREFIX}/maintenance" + (f"?id={selected}" if selected else "")
        if request.headers.get("hx-request") != "true":
            return RedirectResponse(here, status_code=303)
        data = await page(rt, {"id": selected} if selected else {})
        body = renderer.body(this(), data, viewer=who, notice=None)
        # the outcome (and a dry run's plan) in #flash, where live refreshes leave it
        flash = renderer.render("maintenance_flash.html", notice=notice, plan=plan)
        headers = {**NO_STORE, "HX-Push-Url": here} if selected else NO_STORE
        return HTMLResponse(body + flash, headers=headers)

    @router.post("/maintenance", include_in_schema=False)
    async def start(request: Request) -> Response:
        who = await session.actor(request, ROLE)
        fields = await session.form(request)
        dry = fields.get("dryRun") in ("1", "on", "true")
        selected, shown = "", None
        try:
            hosts = parse_hosts(fields.get("hosts", ""))
            ask = SessionRequest(
                hosts,
                None,
                None,
                parse_window(fields.get("hostWindow", "")),
                fields.get("scaleIn") in ("1", "on", "true"),
                dry,
            )
            created, plan = await run_in_threadpool(rt.maintenance.create, ask, who.principal.name)
            if created is None:
                shown = plan_view(plan.to_dict())
                verdict = "can be done" if plan.feasible else "would be refused"
                notice = ("ok", f"Plan over {', '.join(hosts)}: {verdict}.")
            else:
                selected = created.id
                notice = ("ok", f"Maintenance {created.id[:8]} started by {who.principal.name} "
                                f"over {', '.join(hosts)}.")  # fmt: skip
                log.warning(
                    "dashboard: %s started maintenance %s over %s",
                    who.principal.name,
                    created.id,
                    hosts,
                )
        except (Conflict, InvalidInput, NotFound) as exc:
            notice = ("error", str(exc))
        return await answer(request, who, notice, selected, shown)

    @router.post("/maintenance/{session_id}/abort", include_in_schema=False)
    async def abort(session_id: str, request: Request) -> Response:
        who = await session.actor(request, ROLE)
        try:
            await run_in_threadpool(rt.maintenance.abort, session_id, who.principal.name)
            notice = ("ok", f"Maintenance {session_id[:8]} aborted by {who.principal.name}.")
            log.warning("dashboard: %s aborted maintenance %s", who.principal.name, session_id)
        except (Conflict, NotFound) as exc:
            notice = ("error", str(exc))
        return await answer(request, who, notice, session_id)

    @router.post("/maintenance/{session_id}/hosts/{host}/done", include_in_schema=False)
    async def host_done(session_id: str, host: str, request: Request) -> Response:
        who = await session.actor(request, ROLE)
        try:
            await run_in_threadpool(rt.maintenance.host_done, session_id, host, who.principal.name)
            notice = ("ok", f"{host}: maintenance done, said {who.principal.name}.")
        except (Conflict, NotFound) as exc:
            notice = ("error", str(exc))
        return await answer(request, who, notice, session_id)

    return router


__all__ = ["ROLE", "detail", "marker", "page", "parse_hosts", "plan_view", "routes"]
