"""Readable views of the running lab: tunnels, SAs, BGP sessions, routes."""

from __future__ import annotations

from lablib.nslab import Lab

__all__ = ["bgp_line", "status_text", "tunnel_line"]


def tunnel_line(lab: Lab, node: str, dev: str) -> str:
    link = lab.link(node, dev)
    flags = ",".join(str(f) for f in link.get("flags", []))  # type: ignore[attr-defined]
    stats = link.get("stats64", {})
    tx = stats.get("tx", {}) if isinstance(stats, dict) else {}
    child = "tun" + dev.removeprefix("vti")
    sa = "SA installed" if lab.child_installed(node, child) else "NO SA"
    return (
        f"{node} {dev}: {link.get('operstate')} <{flags}>  {sa}  "
        f"tx packets {tx.get('packets', '?')} carrier errors {tx.get('carrier_errors', '?')}"
    )


def bgp_line(lab: Lab) -> str:
    sessions = lab.bgp_sessions()
    best = lab.route_devs("siteB", "10.1.0.0/24")
    return (
        "siteB BGP: "
        + ", ".join(f"{name} {state}" for name, state in sorted(sessions.items()))
        + f"; route to site A's LAN 10.1.0.0/24 via {best[0] if best else 'NOTHING'}"
    )


def status_text(lab: Lab) -> str:
    lines = [f"lab: {lab.kind} tunnels, site A stack {lab.stack}"]
    for node in ("siteA", "siteB"):
        for dev in ("vti1", "vti2"):
            lines.append("  " + tunnel_line(lab, node, dev))
    lines.append("  " + bgp_line(lab))
    devs = lab.route_devs("siteA", "10.2.0.0/24")
    lines.append(f"  siteA routes to site B's LAN 10.2.0.0/24: {', '.join(devs) or 'none'}")
    lines.append("  BIRD's view of 10.1.0.0/24:")
    lines.extend("    " + ln for ln in lab.bird_route_text("10.1.0.0/24").splitlines()[1:] if ln)
    return "\n".join(lines)
