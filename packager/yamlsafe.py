"""Strict YAML loading for files users hand us.

PyYAML's SafeLoader silently keeps the last of duplicate keys and expands
aliases without bound; both hide mistakes (or attacks) in a manifest. This
loader rejects duplicate keys and refuses aliases outright: a manifest has no
use for them, and refusing them is the simplest defence against alias bombs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from packager.errors import BadInput

MAX_BYTES = 1 << 20  # a manifest is a page of text, not a megabyte


class _StrictLoader(yaml.SafeLoader):
    pass


def _no_alias(self: _StrictLoader, node: yaml.Node) -> Any:  # pragma: no cover - replaced below
    raise AssertionError


def _compose_node(self: _StrictLoader, parent, index):  # type: ignore[no-untyped-def]
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise yaml.constructor.ConstructorError(
            None, None, f"YAML aliases are not allowed (alias *{event.anchor})", event.start_mark
        )
    return yaml.SafeLoader.compose_node(self, parent, index)


def _construct_mapping(self: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    self.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = self.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


_StrictLoader.compose_node = _compose_node  # type: ignore[method-assign]
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    """Parse one YAML document strictly; errors name the file and the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput("file not found", file=path) from None
    except IsADirectoryError:
        raise BadInput("is a directory, expected a YAML file", file=path) from None
    if len(raw) > MAX_BYTES:
        raise BadInput(f"file is {len(raw)} bytes, over the {MAX_BYTES}-byte limit", file=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})", file=path) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader derives from SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise BadInput(f"{where}: {e.problem}", file=path) from None
    except yaml.YAMLError as e:
        raise BadInput(f"invalid YAML: {e}", file=path) from None
