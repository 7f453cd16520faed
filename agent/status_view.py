"""The snapshot for a person: a few site lines and one row per tunnel, like `show` on a router.

Pure: a snapshot (as the control socket answers it) in, lines out. Times in a snapshot are
on the agent's monotonic clock, so they are shown relative to its `now`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ago", "render"]

_COLUMNS = (
    "TUNNEL",
    "IFACE",
    "HEALTH",
    "FOR",
    "REASON",
    "SA",
    "LOSS",
    "RTT",
    "ROLE",
    "METRIC",
    "BGP",
    "ANN",
    "LEARNED",
    "PENALTY",
)
# What each pending deadline means, as "<tunnel> <words> in <time>".
_DEADLINES = {
    "preempts_at": "takes traffic back",
    "proven_at": "proven",
    "probation_at": "probation",
    "reuse_at": "reusable (dampening)",
}


def ago(seconds: float) -> str:
    """3s, 2m05s, 1h02m, 3d04h: short, and exact enough for an operator."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render(snap: Mapping[str, Any]) -> list[str]:
    now = float(snap["now"])
    tunnels: Sequence[Mapping[str, Any]] = snap["tunnels"]
    lines = [_site(snap, now)]
    move = snap.get("last_move")
    if move:
        took = move.get("detected_after_s")
        after = "" if took is None else f" (detected after {took:.3f}s)"
        src = ",".join(move["from"]) or "-"
        dst = ",".join(move["to"]) or "-"
        lines.append(
            f"last move: {move['kind']} {src} -> {dst} {ago(now - move['at'])} ago: "
            f"{move['reason']}{after}"
        )
    lost = snap.get("components_lost") or {}
    if lost:
        gone = ", ".join(f"{n} (for {ago(now - t)})" for n, t in sorted(lost.items()))
        lines.append(f"components lost: {gone}")
    rows = [list(_COLUMNS)] + [_row(t, now) for t in tunnels]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    announced = [
        f"{t['name']} {a['prefix']} to {a['neighbor']} med {a['med']}"
        + (f" prepend {a['as_path_prepend']}" if a["as_path_prepend"] else "")
        + (f" community {' '.join(a['communities'])}" if a["communities"] else "")
        for t in tunnels
        for a in t["announced"]
    ]
    if announced:
        lines.append("")
        lines.append("announced: " + "; ".join(announced))
    pending = [
        f"{t['name']} {_DEADLINES.get(what, what)} in {ago(at - now)}"
        for t in tunnels
        for what, at in sorted(t["deadlines"].items(), key=lambda kv: kv[1])
    ]
    pending += [
        f"{what.removesuffix('_at')} in {ago(at - now)}"
        for what, at in sorted(snap.get("deadlines", {}).items(), key=lambda kv: kv[1])
    ]
    if pending:
        lines.append("pending: " + "; ".join(pending))
    return lines


def _site(snap: Mapping[str, Any], now: float) -> str:
    carriers = ", ".join(snap["carriers"]) or "nothing"
    standbys = ", ".join(snap["standbys"]) or "none"
    started = f"up {ago(now - snap['started_at'])}"
    settled = "" if snap["settled"] else ", not decided yet"
    both = " BOTH DOWN" if snap["both_down"] else ""
    mode = snap["policy"]["mode"]
    return (
        f"{snap['agent_id']} ({mode}, {started}{settled}): carrying {carriers}, "
        f"standby {standbys}{both}"
    )


def _row(t: Mapping[str, Any], now: float) -> list[str]:
    views = t["sa_by_source"]
    sa = f"{t['sa']}({','.join(sorted(views))})" if views else "-"
    if t["blind_sources"]:
        sa += f" blind:{','.join(t['blind_sources'])}"
    probes = t["probes"]
    if probes is None:
        loss = "-"
    elif probes["of"] == 0 and probes["lost_in_a_row"]:
        # A tunnel that went DOWN starts its window afresh; what it has is the run of losses.
        loss = f"{probes['lost_in_a_row']} lost"
    else:
        loss = f"{probes['lost']}/{probes['of']}"
    rtt_ms = None if probes is None else probes["rtt_median_ms"]
    rtt = "-" if rtt_ms is None else f"{rtt_ms:.1f}ms"
    learned = t["learned"]
    bgp = t["bgp"]
    got = "-" if bgp is None else str(learned["count"])
    if learned["rejected"]:
        got += f" ({learned['rejected']} rej)"
    damp = t["dampening"]
    penalty = f"{damp['penalty']:.0f}" + (" SUPPRESSED" if damp["suppressed"] else "")
    return [
        t["name"],
        t["interface"],
        t["health"],
        ago(now - t["since"]),
        t["reason"],
        sa,
        loss,
        rtt,
        t["role"],
        "-" if t["metric"] is None else str(t["metric"]),
        "-" if bgp is None else bgp["state"],
        str(len(t["announced"])),
        got,
        penalty,
    ]
