"""Strict YAML loading for files users hand us.

PyYAML's SafeLoader silently keeps the last of duplicate keys and expands
aliases without bound; both hide mistakes (or attacks) in a manifest. This
loader rejects duplicate keys and refuses aliases outright: a manifest has no
use for them, and refusing them is the simplest defence against alias bombs.

Like every untrusted read (``packager.wire``): the file is read only if it is a
regular file within MAX_BYTES (a FIFO or ``/dev/zero`` is refused by ``lstat``,
before it is opened), a symlink only if it stays in the file's own directory,
the text is UTF-8 without a byte-order mark, nesting stops at ``wire.MAX_DEPTH``
(PyYAML's composer recurses, and would raise RecursionError), and ``.inf``/``.nan`` are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from packager import wire
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
    depth = getattr(self, "_depth", 0) + 1
    if depth > wire.MAX_DEPTH:
        raise yaml.constructor.ConstructorError(
            None, None, f"nested more than {wire.MAX_DEPTH} levels deep", self.peek_event().start_mark
        )
    self._depth = depth
    try:
        return yaml.SafeLoader.compose_node(self, parent, index)
    finally:
        self._depth = depth - 1


def _construct_float(self: _StrictLoader, node: yaml.ScalarNode) -> float:
    value = yaml.SafeLoader.construct_yaml_float(self, node)
    if not math.isfinite(value):
        raise yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not a finite number", node.start_mark)
    return value


def _construct_mapping(self: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    self.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = self.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"duplicate key {repr(key)[:120]}", key_node.start_mark
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


def _construct_object(self: _StrictLoader, node: yaml.Node, deep: bool = False) -> Any:
    # PyYAML's constructors raise plain Python errors for some scalars and keys: a 5,000-digit integer
    # (int()'s digit limit), a date 2001-13-45, a timestamp offset of 99 hours, a list as a mapping key.
    try:
        return yaml.SafeLoader.construct_object(self, node, deep=deep)
    except (ValueError, TypeError, OverflowError) as e:
        raise yaml.constructor.ConstructorError(None, None, f"not accepted: {str(e)[:120]}", node.start_mark) from None


_StrictLoader.compose_node = _compose_node  # type: ignore[method-assign]
_StrictLoader.construct_object = _construct_object  # type: ignore[method-assign]
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _read(path: Path) -> bytes:
    """The file's bytes: a regular file within MAX_BYTES, or a symlink to one in the same directory."""
    if not os.path.lexists(path):
        raise BadInput("file not found", file=path)
    target = path
    if os.path.islink(path):
        # Follow a symlink only as far as the file's own directory (the artifact): never outside it.
        home = Path(os.path.realpath(path.parent))
        target = Path(os.path.realpath(path))
        if home not in target.parents:
            raise BadInput(f"is a symlink to {target}, outside {home}; refused", file=path)
    if target.is_dir():
        raise BadInput("is a directory, expected a YAML file", file=path)
    return wire.read_regular(target, MAX_BYTES, error=BadInput, shown=str(path))


def load_yaml(path: Path) -> Any:
    """Parse one YAML document strictly; errors name the file and the line."""
    return read_yaml(path)[0]


def read_yaml(path: Path) -> tuple[Any, bytes]:
    """The document and the very bytes it was parsed from (hash or show those: reading the path again
    could read another file, a FIFO swapped in meanwhile)."""
    raw = _read(Path(path))
    text = wire.decode_utf8(raw, error=BadInput, shown=str(path))
    try:
        return yaml.load(text, Loader=_StrictLoader), raw  # noqa: S506 - _StrictLoader derives from SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise BadInput(f"{where}: {e.problem}", file=path) from None
    except yaml.YAMLError as e:
        raise BadInput(f"invalid YAML: {' '.join(str(e).split())[:200]}", file=path) from None  # PyYAML's text spans lines
