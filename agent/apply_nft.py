"""The agent's own nftables table for SNAT into tunnels: its name, its rules read from
`nft -j`, and the commands that bring it to what the config asks. Pure; no nft here.

Only this table is ever written: `table inet vti_failover_<agent_id>`, one nat chain at the
srcnat hook. inet so that one table holds IPv4 and IPv6 tunnels (nat in inet: kernel 5.2).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any

from agent.apply_facts import NftCommand, NftFacts, SnatRule
from agent.config import Config

__all__ = ["CHAIN", "decode_table", "desired_rules", "nft_commands", "table_name"]

CHAIN = "postrouting"
_CHAIN_SPEC = "{ type nat hook postrouting priority srcnat; policy accept; }"
_SRCNAT = 100


def table_name(agent_id: str) -> str:
    # nft identifiers take letters, digits, _ . /; an agent_id may also hold '-'.
    return "vti_failover_" + re.sub(r"[^A-Za-z0-9_]", "_", agent_id)


def desired_rules(cfg: Config) -> tuple[SnatRule, ...]:
    return tuple(
        SnatRule(t.interface, ipaddress.ip_interface(t.inner.local), t.snat.source)
        for t in cfg.tunnels
        if t.snat is not None
    )


def _match(expr: Any, left: Any, op: str) -> Any:
    m = expr.get("match") if isinstance(expr, dict) else None
    if not isinstance(m, dict) or m.get("left") != left or m.get("op", "==") != op:
        return None
    return m.get("right")


def _rule(expr: Any) -> SnatRule | None:
    """The SnatRule of a rule's expressions, if it has exactly the shape apply writes."""
    if not isinstance(expr, list) or len(expr) != 4:
        return None
    oif = _match(expr[0], {"meta": {"key": "oifname"}}, "==")
    for proto in ("ip", "ip6"):
        saddr = _match(expr[1], {"payload": {"protocol": proto, "field": "saddr"}}, "==")
        daddr = _match(expr[2], {"payload": {"protocol": proto, "field": "daddr"}}, "!=")
        snat = expr[3].get("snat") if isinstance(expr[3], dict) else None
        if not (isinstance(oif, str) and isinstance(saddr, str) and isinstance(snat, dict)):
            continue
        prefix = daddr.get("prefix") if isinstance(daddr, dict) else None
        if not isinstance(prefix, dict) or snat.get("family") != proto or len(snat) != 2:
            continue
        try:
            inner = ipaddress.ip_interface(f"{saddr}/{int(prefix['len'])}")
            net = ipaddress.ip_network(f"{prefix['addr']}/{int(prefix['len'])}")
            source = ipaddress.ip_address(str(snat["addr"]))
        except (KeyError, ValueError, TypeError):
            return None
        if inner.network != net:
            return None
        return SnatRule(oif, inner, source)
    return None


def decode_table(listing: Any, table: str) -> NftFacts:
    """NftFacts from `nft -j list table inet <table>` (a table that exists)."""
    items = listing.get("nftables", []) if isinstance(listing, dict) else []
    chain_ok = stray = False
    rules: dict[int, SnatRule | None] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        chain, rule = item.get("chain"), item.get("rule")
        if isinstance(chain, dict) and chain.get("table") == table:
            if chain.get("name") != CHAIN:
                # A chain apply never writes: the table is built again from nothing.
                stray = True
                continue
            seen = (chain.get("type"), chain.get("hook"), chain.get("prio"), chain.get("policy"))
            chain_ok = seen == ("nat", "postrouting", _SRCNAT, "accept")
        if not isinstance(rule, dict) or "handle" not in rule:
            continue
        if (rule.get("table"), rule.get("chain")) == (table, CHAIN):
            rules[int(rule["handle"])] = _rule(rule.get("expr"))
    return NftFacts(table=True, chain_ok=chain_ok and not stray, rules=rules)


def nft_commands(table: str, want: tuple[SnatRule, ...], have: NftFacts) -> Iterator[NftCommand]:
    """The commands that make our table hold exactly `want` (no table when nothing is wanted)."""
    where = f"inet {table}"
    if not want:
        if have.table:
            yield NftCommand(f"delete table {where}")
        return
    if have.table and not have.chain_ok:
        # Our table with a chain of another hook or type: built again from nothing.
        yield NftCommand(f"delete table {where}")
        have = NftFacts()
    if not have.table:
        yield NftCommand(f"add table {where}")
        yield NftCommand(f"add chain {where} {CHAIN} {_CHAIN_SPEC}")
    kept: set[SnatRule] = set()
    for handle, rule in sorted(have.rules.items()):
        if rule is None or rule not in want or rule in kept:
            yield NftCommand(f"delete rule {where} {CHAIN} handle {handle}")
        else:
            kept.add(rule)
    for rule in want:
        if rule not in kept:
            kept.add(rule)
            yield NftCommand(f"add rule {where} {CHAIN} {rule.text}")
