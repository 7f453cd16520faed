"""The import policy for learned routes: what a BGP neighbor may have installed, and why not.

A prefix is refused when it is a default route (unless allowed), a martian, covers or lies
inside what the tunnels need to exist (their underlay ends, inner subnets, BGP neighbors)
or our own site prefixes, misses the operator's accept list, or comes past the neighbor's
max-prefix limit. Every test is a lookup in tables built once per config (keys are
(version, length, network as an integer)), so a prefix costs the same however many tunnels
and site prefixes there are.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agent.config import Config, OnMaxPrefixes
from agent.core.actions import PublishAlert

__all__ = [
    "LIST_PER_WINDOW",
    "REMEMBERED",
    "WINDOW_S",
    "Admitted",
    "ImportRules",
    "Ledger",
    "Rejection",
    "admit",
    "alerts",
    "import_rules",
    "readmit",
    "rejection",
    "roll",
    "summaries",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Key = tuple[int, int, int]  # (IP version, prefix length, network address as an integer)

# Refusals listed in alerts per neighbor per window; the rest are counted and summed up.
LIST_PER_WINDOW = 10
WINDOW_S = 60.0
# Refused prefixes remembered per neighbor (so a re-announcement is not refused and told
# again); past this a hostile peer's refusals are only counted.
REMEMBERED = 10_000


class Rejection(enum.StrEnum):
    """Why a learned prefix was refused (the `reason` label of the rejection counter)."""

    DEFAULT = "default"
    MARTIAN = "martian"
    UNDERLAY = "underlay"
    TUNNEL = "tunnel"
    SITE = "site"
    NOT_ACCEPTED = "not-accepted"
    MAX_PREFIXES = "max-prefixes"


# Never a unicast destination behind a tunnel, whoever announces it.
_MARTIANS = (
    ("0.0.0.0/8", "'this network'"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)


def _key(net: Network, length: int) -> Key:
    shift = net.max_prefixlen - length
    return (net.version, length, (int(net.network_address) >> shift) << shift)


@dataclass(frozen=True)
class _Table:
    """Networks by key, with the lengths present per IP version (longest first)."""

    entries: Mapping[Key, tuple[Rejection, str]] = field(default_factory=dict)
    lengths: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def holding(self, net: Network) -> tuple[Rejection, str] | None:
        """The entry `net` lies inside (or equals), the longest first."""
        for length in self.lengths.get(net.version, ()):
            if length <= net.prefixlen:
                found = self.entries.get(_key(net, length))
                if found is not None:
                    return found
        return None


def _table(nets: Iterable[tuple[Network, Rejection, str]]) -> _Table:
    entries: dict[Key, tuple[Rejection, str]] = {}
    for net, why, what in nets:
        entries.setdefault(_key(net, net.prefixlen), (why, what))
    lengths: dict[int, set[int]] = {}
    for version, length, _ in entries:
        lengths.setdefault(version, set()).add(length)
    return _Table(entries, {v: tuple(sorted(ls, reverse=True)) for v, ls in lengths.items()})


@dataclass(frozen=True)
class ImportRules:
    """The policy compiled for one config (see import_rules)."""

    allow_default: bool = False
    martians: _Table = field(default_factory=_Table)
    # Ours: every prefix inside one of these is refused ...
    inside: _Table = field(default_factory=_Table)
    # ... and so is every prefix covering one: each of ours with all its supernets.
    covering: Mapping[Key, tuple[Rejection, str]] = field(default_factory=dict)
    accepting: bool = False
    accept: Mapping[Key, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    accept_lengths: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    max_prefixes: int | None = None
    withdraw_all: bool = True


def import_rules(cfg: Config) -> ImportRules:
    policy = cfg.remote_prefixes.import_
    ours: list[tuple[Network, Rejection, str]] = []
    for t in cfg.tunnels:
        for end, address in (("remote", t.underlay.remote), ("local", t.underlay.local)):
            what = f"{t.name}'s underlay {end} {address}"
            ours.append((ipaddress.ip_network(address), Rejection.UNDERLAY, what))
    for t in cfg.tunnels:
        for inner in (t.inner, t.inner6):
            if inner is not None:
                subnet = inner.local.network
                ours.append((subnet, Rejection.TUNNEL, f"{t.name}'s inner subnet {subnet}"))
        if cfg.bgp is not None:
            neighbor = cfg.neighbor_of(t)
            what = f"{t.name}'s BGP neighbor {neighbor}"
            ours.append((ipaddress.ip_network(neighbor), Rejection.TUNNEL, what))
    ours += [(n, Rejection.SITE, f"site prefix {n}") for n in cfg.site_prefixes]
    covering: dict[Key, tuple[Rejection, str]] = {}
    for net, why, what in ours:
        for length in range(net.prefixlen + 1):
            covering.setdefault(_key(net, length), (why, what))
    accept: dict[Key, list[tuple[int, int]]] = {}
    for entry in policy.accept:
        accept.setdefault(_key(entry.prefix, entry.prefix.prefixlen), []).append(
            (entry.ge, entry.le)
        )
    lengths: dict[int, set[int]] = {}
    for version, length, _ in accept:
        lengths.setdefault(version, set()).add(length)
    return ImportRules(
        allow_default=policy.allow_default,
        martians=_table(
            (ipaddress.ip_network(n), Rejection.MARTIAN, what) for n, what in _MARTIANS
        ),
        # Underlay ends and neighbors are single addresses: only covering them matters.
        inside=_table(x for x in ours if x[1] is not Rejection.UNDERLAY),
        covering=covering,
        accepting=bool(policy.accept),
        accept={k: tuple(v) for k, v in accept.items()},
        accept_lengths={v: tuple(sorted(ls, reverse=True)) for v, ls in lengths.items()},
        max_prefixes=policy.max_prefixes,
        withdraw_all=policy.on_max_prefixes is OnMaxPrefixes.WITHDRAW_ALL,
    )


def rejection(rules: ImportRules, prefix: str) -> tuple[Rejection, str] | None:
    """Why the policy refuses this canonical prefix (reason and detail), or None."""
    net = ipaddress.ip_network(prefix)
    if net.prefixlen == 0:
        # The default covers the underlay too: allowing it means the host routes each
        # underlay far end by something more specific, as such setups always do.
        return None if rules.allow_default else (Rejection.DEFAULT, "a default route")
    martian = rules.martians.holding(net)
    if martian is not None:
        return martian[0], f"inside {martian[1]} space"
    mine = rules.covering.get(_key(net, net.prefixlen))
    if mine is not None:
        return mine[0], f"covers {mine[1]}"
    held = rules.inside.holding(net)
    if held is not None:
        return held[0], f"inside {held[1]}"
    if rules.accepting and not _accepted(rules, net):
        return Rejection.NOT_ACCEPTED, "matches no entry of import.accept"
    return None


def _accepted(rules: ImportRules, net: Network) -> bool:
    for length in rules.accept_lengths.get(net.version, ()):
        if length <= net.prefixlen:
            for ge, le in rules.accept.get(_key(net, length), ()):
                if ge <= net.prefixlen <= le:
                    return True
    return False


@dataclass(frozen=True)
class Ledger:
    """One neighbor's refusals: what is refused now, counts by reason, the log window."""

    # Refused prefixes the neighbor has not withdrawn since (at most REMEMBERED of them).
    refused: Mapping[str, Rejection] = field(default_factory=dict)
    # Every refusal since the agent started, by reason: what metrics and state show.
    counts: Mapping[Rejection, int] = field(default_factory=dict)
    # withdraw-all tripped: nothing is learned from the neighbor until its session restarts.
    over_limit: bool = False
    window_at: float = float("-inf")
    listed: int = 0  # refusals listed in alerts in this window
    unlisted: int = 0  # refusals in this window that no alert mentioned

    def summary_due(self) -> float | None:
        """When the window's unmentioned refusals are to be summed up in an alert."""
        return self.window_at + WINDOW_S if self.unlisted else None


@dataclass(frozen=True)
class Admitted:
    """What one update from a neighbor leaves: the learned set, the ledger, what to tell."""

    learned: frozenset[str]
    ledger: Ledger
    # (prefix, reason, detail) for the alert; `told` counts every refusal it mentions.
    listed: tuple[tuple[str, Rejection, str], ...] = ()
    told: int = 0
    tripped: bool = False
    summary: int = 0  # refusals of the window before, mentioned by no alert


def roll(ledger: Ledger, now: float) -> tuple[Ledger, int]:
    """Close a window that is over: the new ledger, and how many refusals no alert mentioned.

    A window opens at the first refusal after the last one closed.
    """
    if now < ledger.window_at + WINDOW_S or not (ledger.listed or ledger.unlisted):
        return ledger, 0
    return replace(ledger, window_at=now, listed=0, unlisted=0), ledger.unlisted


def admit(
    rules: ImportRules,
    ledger: Ledger,
    known: frozenset[str],
    withdrawn: Iterable[str],
    announced: Sequence[str],
    now: float,
) -> Admitted:
    """Fold one update (canonical prefixes, withdrawn first) through the policy."""
    rolled, summary = roll(ledger, now)
    gone = set(withdrawn)
    # Read through `refused`; copied into `owned` on the first change.
    refused: Mapping[str, Rejection] = rolled.refused
    owned: dict[str, Rejection] | None = None
    if gone & refused.keys():
        # Withdrawn: announced again, it is judged (and told) afresh.
        refused = owned = {p: why for p, why in refused.items() if p not in gone}
    learned = set(known) - gone
    new: list[tuple[str, Rejection, str]] = []
    tripped = False
    limit = rules.max_prefixes
    for prefix in announced:
        if prefix in learned:
            continue
        if rolled.over_limit or tripped:
            new.append((prefix, Rejection.MAX_PREFIXES, ""))
            continue
        was = refused.get(prefix)
        room = limit is None or len(learned) < limit
        if was is not None and not (was is Rejection.MAX_PREFIXES and room):
            continue  # refused and told already; still refused
        found = rejection(rules, prefix)
        if found is None and not room:
            if rules.withdraw_all:
                tripped = True
                learned.clear()
                refused = owned = {}
                new.append((prefix, Rejection.MAX_PREFIXES, f"past max_prefixes {limit}"))
                continue
            found = (Rejection.MAX_PREFIXES, f"past max_prefixes {limit}")
        if owned is None and (was is not None or (found is not None and len(refused) < REMEMBERED)):
            refused = owned = dict(refused)
        if found is None:
            learned.add(prefix)
            if owned is not None:
                owned.pop(prefix, None)
        else:
            # `was` is None here: an excess prefix refused before passed the rules then.
            if owned is not None and len(owned) < REMEMBERED:
                owned[prefix] = found[0]
            new.append((prefix, *found))
    if not new and owned is None:
        return Admitted(frozenset(learned), rolled, summary=summary)
    counts = dict(rolled.counts)
    for _, why, _ in new:
        counts[why] = counts.get(why, 0) + 1
    room_to_list = LIST_PER_WINDOW - rolled.listed
    listed = tuple(new[:room_to_list]) if room_to_list > 0 else ()
    told = len(new) if listed or tripped else 0
    fresh = new and now >= rolled.window_at + WINDOW_S
    return Admitted(
        frozenset(learned),
        replace(
            rolled,
            refused=refused,
            counts=counts,
            over_limit=rolled.over_limit or tripped,
            window_at=now if fresh else rolled.window_at,
            listed=rolled.listed + len(listed),
            unlisted=rolled.unlisted + len(new) - told,
        ),
        listed,
        told,
        tripped,
        summary,
    )


def readmit(rules: ImportRules, ledger: Ledger, known: frozenset[str]) -> Admitted:
    """A new config's policy over what a neighbor taught: learned ones it now forbids are
    dropped and remembered refusals it now allows are learned (nothing is counted or told).

    Refusals past REMEMBERED come back only when announced again; a neighbor over its
    limit stays there until its session restarts.
    """
    if ledger.over_limit:
        return Admitted(frozenset(), ledger)
    allowed: list[str] = []
    refused: dict[str, Rejection] = {}
    for prefix in sorted(known | ledger.refused.keys()):
        found = rejection(rules, prefix)
        if found is None:
            allowed.append(prefix)
        elif len(refused) < REMEMBERED:
            refused[prefix] = found[0]
    limit = rules.max_prefixes
    if limit is not None and len(allowed) > limit:
        if rules.withdraw_all:
            return Admitted(frozenset(), replace(ledger, refused={}, over_limit=True))
        for prefix in allowed[limit:]:
            if len(refused) < REMEMBERED:
                refused[prefix] = Rejection.MAX_PREFIXES
        allowed = allowed[:limit]
    return Admitted(frozenset(allowed), replace(ledger, refused=refused))


def _alert(kind: str, tunnel: str, reason: str, now: float) -> PublishAlert:
    return PublishAlert(kind=kind, at=now, from_tunnels=(tunnel,), to_tunnels=(), reason=reason)


def alerts(tunnel: str, got: Admitted, rules: ImportRules, now: float) -> list[PublishAlert]:
    """What operators are told about one update: refusals listed (a few a minute), a
    tripped limit, and the sum of the last window's refusals nobody was told about."""
    out: list[PublishAlert] = []
    if got.summary:
        out.append(_summary(tunnel, got.summary, now))
    if got.tripped:
        out.append(
            _alert(
                "max-prefixes",
                tunnel,
                f"{tunnel}'s neighbor sent more than {rules.max_prefixes} prefixes: every "
                "route learned from it is withdrawn until its session restarts "
                "(on_max_prefixes: withdraw-all)",
                now,
            )
        )
    if got.listed:
        shown = ", ".join(
            f"{p} ({why.value}{': ' + detail if detail else ''})" for p, why, detail in got.listed
        )
        more = got.told - len(got.listed)
        text = f"refused {got.told} prefix{'es' if got.told > 1 else ''} learned from {tunnel}: "
        text += shown + (f" and {more} more" if more else "")
        if got.ledger.listed >= LIST_PER_WINDOW:
            text += f"; more refusals from {tunnel} are summed up once a minute"
        out.append(_alert("learned-rejected", tunnel, text, now))
    return out


def _summary(tunnel: str, count: int, now: float) -> PublishAlert:
    return _alert(
        "learned-rejected",
        tunnel,
        f"refused {count} more prefix{'es' if count > 1 else ''} learned from {tunnel} in "
        f"the last {WINDOW_S:g} s (not listed; counted by reason)",
        now,
    )


def summaries(
    ledgers: Mapping[str, Ledger], now: float
) -> tuple[Mapping[str, Ledger], list[PublishAlert]]:
    """Close every window that is over and had refusals nobody was told about."""
    due = [n for n, led in ledgers.items() if (at := led.summary_due()) is not None and at <= now]
    if not due:
        return ledgers, []
    out = dict(ledgers)
    told: list[PublishAlert] = []
    for name in due:
        out[name], count = roll(ledgers[name], now)
        told.append(_summary(name, count, now))
    return out, told
