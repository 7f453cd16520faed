"""A neighbor's update folded into the learned tables, through the import policy."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from agent.core import events as ev
from agent.core import imports as imp
from agent.core.actions import PublishAlert
from agent.core.state import CoreState

__all__ = ["fold"]

Update = ev.BgpRouteLearned | ev.BgpRouteWithdrawn | ev.BgpRoutesChanged


def _prefix(text: str) -> str | None:
    """A peer's prefix in canonical form, or None when it is not a prefix at all."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def fold(
    state: CoreState, event: Update, now: float
) -> tuple[CoreState, list[str], list[PublishAlert]]:
    """The state with the update in, the prefixes whose routes may change, what to tell.

    Only the ledger (and its summary deadline) and the tunnel's learned set move; what the
    routes become is the engine's business.
    """
    name = event.tunnel
    if isinstance(event, ev.BgpRoutesChanged):
        gone, came = event.withdrawn, event.announced
    elif isinstance(event, ev.BgpRouteLearned):
        gone, came = (), (event.prefix,)
    else:
        gone, came = (event.prefix,), ()
    # A malformed prefix from a peer changes nothing (the adapter logs it).
    withdrawn = {p for p in map(_prefix, gone) if p is not None}
    announced = list(dict.fromkeys(p for p in map(_prefix, came) if p is not None))
    known = state.learned.get(name, frozenset())
    ledger = state.imports.get(name, imp.Ledger())
    got = imp.admit(state.ix.imports, ledger, known, withdrawn, announced, now)
    # A tripped limit drops everything the neighbor taught, not only this update's.
    touched = withdrawn.union(announced, known if got.tripped else ())
    changed = [p for p in touched if (p in known) != (p in got.learned)]
    if changed:
        state = replace(state, learned={**state.learned, name: got.learned})
    if got.ledger is not ledger:
        state = replace(state, imports={**state.imports, name: got.ledger})
        due = got.ledger.summary_due()
        if due is not None and due != ledger.summary_due():
            state = replace(state, deadlines=tuple(sorted((*state.deadlines, due))))
    return state, changed, imp.alerts(name, got, state.ix.imports, now)
