"""The one YAML loader for every file the driver reads (recipes, correction files, finetune.yaml).

A SafeLoader (no Python objects), and more: a key given twice in one mapping is an error, not a
silent overwrite; a file over MAX_BYTES, more than MAX_ALIASES alias uses (the "billion laughs"
pattern, whose expansion grows exponentially in whatever walks the data) or nesting deeper than
MAX_DEPTH is refused before it is built; and YAML 1.2 floats without a dot (`1e-3`, `1e30`) are
numbers, as a user means them, not strings. Every failure is one InputError line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from driver.errors import InputError

MAX_BYTES = 1 << 20  # 1 MiB: no recipe or correction file comes near it
MAX_ALIASES = 100
MAX_DEPTH = 64
MAX_NODES = 100_000  # scalars, lists and mappings, counted as a reader of the data sees them (aliases expanded)

_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class GuardedLoader(yaml.SafeLoader):
    """SafeLoader with duplicate keys refused and aliases and depth capped."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} alias uses (*name); "
                                                  "write the values out", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; explicit keys may override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document that is a cycle (`&a [*a]`) or whose aliases expand past MAX_NODES."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise yaml.composer.ComposerError(None, None, "refers to itself through an alias", node.start_mark)
        visiting.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        visiting.discard(key)
        if total > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"expands to more than {MAX_NODES} values "
                                              "through its aliases; write the values out", node.start_mark)
        sizes[key] = total
        return total

    size(root)


GuardedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def load_yaml_text(text: str, source: str, what: str = "YAML") -> Any:
    """Parse YAML text; `source` (a path) and `what` name it in the one-line error."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise InputError(f"{source}: {what} larger than {MAX_BYTES // (1 << 20)} MiB; refused")
    try:
        return yaml.load(text, Loader=GuardedLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{source}: {where}YAML syntax error: {problem}") from None
    except RecursionError:
        raise InputError(f"{source}: {what} nested too deeply; refused") from None


def load_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    return read_yaml_file(path, what)[0]


def read_yaml_file(path: str | Path, what: str = "YAML file") -> tuple[Any, str]:
    """Read and parse a YAML file, refusing one over MAX_BYTES before reading it; the data and the text."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{path}: {what} larger than {MAX_BYTES // (1 << 20)} MiB ({size} bytes); refused")
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: {what} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not text (not UTF-8)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from None
    return load_yaml_text(text, str(path), what), text
