"""Inputs a hostile peer, publisher or file would send, shared by the parser properties."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["HOSTILE_JSON", "json_values"]

HOSTILE_JSON = [
    "[" * 100_000,
    "{" * 5_000,
    '{"a":' * 2_000 + "1" + "}" * 2_000,
    "9" * 5_000,
    '{"t": ' + "9" * 5_000 + "}",
    '{"t": 1e99999}',
    '{"t": -1e99999}',
    '{"t": NaN}',
    '{"t": Infinity}',
    '{"t": -Infinity}',
    '{"command": [], "tunnel": "tun1"}',
    '{"command": {}}',
    '{"type": "update", "neighbor": []}',
    '{"type": "update", "neighbor": {"address": {"peer": []}}}',
    '{"type": "state", "neighbor": {"address": {"peer": "1.2.3.4"}, "state": {}}}',
    '{"type": "update", "neighbor": {"address": {"peer": "1.2.3.4"}, "message": {"update":'
    ' {"announce": {"ipv4 unicast": {"1.2.3.4": [{"nlri": ' + "9" * 400 + "}]}}}}}}",
    '"\\ud800"',
    '{"\\u0000": "\\u0000"}',
    "\x00",
    "{}" * 10_000,
    '{"a": "' + "\\" * 9_999 + '"}',
]


def json_values(max_leaves: int = 20) -> st.SearchStrategy[object]:
    """Any JSON value, small: numbers at their limits, odd strings, nesting."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        st.sampled_from(["10.0.0.0/24", "::/0", "169.254.1.2", "up", "down", "unicast"]),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=10), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )
