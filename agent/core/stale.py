"""What a neighbor taught, kept while our own BGP speaker restarts (RFC 4724).

When exabgp dies, every session ends with it, though the far side still forwards on our
routes (graceful restart) and still announces its own. Flushing what it taught would
cut traffic toward it for the length of the restart; instead the learned prefixes stay,
marked stale, until the new session re-announces each one, its End-of-RIB says the rest
are gone, or `bgp.graceful_restart_s` runs out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from agent.core import events as ev
from agent.core.state import CoreState

__all__ = ["deadlines", "end_of_rib", "expire", "keep", "refreshed"]


def keep(state: CoreState, name: str, now: float) -> CoreState:
    """The session ended with our speaker: its learned prefixes stay, stale, for a while."""
    assert state.cfg.bgp is not None
    until = now + state.cfg.bgp.graceful_restart_s
    kept = state.learned.get(name, frozenset())
    if not kept:
        return forget(state, name)
    return replace(state, stale_learned={**state.stale_learned, name: (until, kept)})


def forget(state: CoreState, name: str) -> CoreState:
    if name not in state.stale_learned:
        return state
    return replace(state, stale_learned={n: s for n, s in state.stale_learned.items() if n != name})


def refreshed(state: CoreState, event: ev.BgpRoutesChanged | ev.BgpRouteLearned) -> CoreState:
    """Prefixes announced again are fresh: no End-of-RIB will take them."""
    entry = state.stale_learned.get(event.tunnel)
    if entry is None:
        return state
    came = event.announced if isinstance(event, ev.BgpRoutesChanged) else (event.prefix,)
    fresh = {_canonical(p) for p in came}
    until, stale = entry
    left = stale - fresh
    if left == stale:
        return state
    if not left:
        return forget(state, event.tunnel)
    return replace(state, stale_learned={**state.stale_learned, event.tunnel: (until, left)})


def end_of_rib(state: CoreState, name: str, family: str) -> CoreState:
    """The neighbor has sent all of `family`: what is still stale of it is gone."""
    entry = state.stale_learned.get(name)
    if entry is None:
        return state
    until, stale = entry
    version = 6 if family == "ipv6" else 4
    gone = frozenset(p for p in stale if _version(p) == version)
    if not gone:
        return state
    state = _drop(state, name, gone)
    left = stale - gone
    if not left:
        return forget(state, name)
    return replace(state, stale_learned={**state.stale_learned, name: (until, left)})


def expire(state: CoreState, now: float) -> CoreState:
    """Stale prefixes past the restart time are gone."""
    for name, (until, stale) in list(state.stale_learned.items()):
        if until <= now:
            state = forget(_drop(state, name, stale), name)
    return state


def deadlines(state: CoreState) -> list[float]:
    return [until for until, _ in state.stale_learned.values()]


def _drop(state: CoreState, name: str, gone: frozenset[str]) -> CoreState:
    learned = state.learned.get(name, frozenset())
    if not learned & gone:
        return state
    # Routes are rebuilt from the tables at the next decision.
    return replace(state, learned={**state.learned, name: learned - gone}, routes_for=None)


def _canonical(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text


def _version(prefix: str) -> int:
    return 6 if ":" in prefix else 4
