"""YAML for a config file: PyYAML's safe loader with the limits a config never reaches.

Refused, each with the line it is on: a key given twice (YAML silently keeps the last), a
key that is a list or a mapping (`? [a, b]`), nesting deeper than MAX_DEPTH (PyYAML's
composer recurses per level), aliases that expand past MAX_NODES (a few hundred bytes of
anchors can stand for a billion nodes), integers of more than MAX_INT_DIGITS digits
(Python refuses to convert 4,300 and more) and NUL characters in strings.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_NODES", "StrictLoader"]

# A config nests six levels (tunnels > tunnel > probe > value); 64 leaves room for anything.
MAX_DEPTH = 64
# A config of 2,000 tunnels has ~100,000 nodes; aliases may multiply them ten times over.
MAX_NODES = 1_000_000
# The largest number in a config is a 32-bit key or mark (10 digits).
MAX_INT_DIGITS = 30


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with the refusals above; one instance per document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", mark
            )
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and id(node) not in self._sizes:
            self._sizes[id(node)] = self._size(node)
        return node

    def _size(self, node: yaml.Node) -> int:
        """Nodes under `node` with every alias expanded; each child was sized before it."""
        if isinstance(node, yaml.ScalarNode):
            return 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                children += (key, value)
        else:
            children = list(node.value)
        size = 1
        for child in children:
            child_size = self._sizes.get(id(child))
            if child_size is None:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to a node that contains it", child.start_mark
                )
            size += child_size
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand to more than {MAX_NODES:,} values (an alias bomb?)",
                node.start_mark,
            )
        return size


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a name, not a list or a mapping", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {_short(repr(key))} (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    digits = sum(c.isalnum() for c in node.value)
    if digits > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"a number of {digits} digits (at most {MAX_INT_DIGITS})", node.start_mark
        )
    value: int = loader.construct_yaml_int(node)
    return value


def _construct_str(loader: StrictLoader, node: yaml.ScalarNode) -> str:
    value: str = loader.construct_yaml_str(node)
    if "\0" in value:
        raise yaml.constructor.ConstructorError(
            None, None, "a NUL character in a string", node.start_mark
        )
    return value


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
StrictLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)
