"""Reading a job spec's YAML (or JSON) text into a document, strictly, before it is validated.

PyYAML's safe loader builds no Python objects, but it is lenient in two ways that matter for a spec:

* a key written twice in one mapping silently keeps the last value, so a second ``max_drop: 0.5``
  further down loosens the gate from 0.01 to 0.5 with no warning. Here a duplicate key is an error
  that names the key and both lines (a merge key ``<<`` may still be overridden, as YAML intends);
* aliases share one object, so a kilobyte of nested anchors (a "billion laughs" document) expands into
  gigabytes when the document is copied, validated or dumped. Here the document's size with every
  alias expanded is counted, without expanding it, and a document beyond ``MAX_SPEC_VALUES`` values or
  ``MAX_SPEC_BYTES`` of text is refused.

Every front door (``squeezeflow run``, ``spec validate``, the Airflow DAG factory and tasks, the
Kubeflow template compiler and its ``spec`` parameter) reads spec text through ``read_spec_text``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from squeezeflow.errors import SpecError

# A real spec is a few hundred values and a few kilobytes; these bounds are far above that and far below
# what exhausts memory.
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_VALUES = 100_000


class _DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base loader reports it
                break
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(
                    f"duplicate key {key!r} (lines {first} and {line}): a key may appear once in a "
                    "mapping; remove one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_values(doc: Any, limit: int) -> int:
    """How many values ``doc`` holds with every shared (aliased) object counted each time it appears;
    stops counting past ``limit``. Sizes are memoised per object, so the count costs one visit of each
    distinct object however large the expansion."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int) -> int:
        if depth > 100:  # deeper than any spec; also keeps recursion bounded
            return limit + 1
        if not isinstance(value, dict | list):
            return 1
        known = sizes.get(id(value))
        if known is not None:
            return known
        children = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > limit:
                break
        sizes[id(value)] = total
        return total

    return size(doc, 0)


def _check_size(size: int, source: str) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"invalid job spec {source}: it is {size:,} bytes; a spec is at most {MAX_SPEC_BYTES:,} bytes "
            "(model weights and data are referenced by URI, never inlined)"
        )


def read_spec_text(text: str | bytes, source: str) -> Any:
    """The document a spec's text holds; ``SpecError`` naming ``source`` if it is not YAML, has a key
    twice in one mapping, or is larger than a spec can be."""
    _check_size(len(text), source)
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _DuplicateKey as err:
        raise SpecError(f"invalid job spec {source}: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"job spec {source} is not valid YAML: {err}") from None
    if _expanded_values(doc, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise SpecError(
            f"invalid job spec {source}: it expands to more than {MAX_SPEC_VALUES:,} values once its YAML "
            "aliases (*name) are resolved: a few nested anchors can describe gigabytes. Write the values "
            "out, or use fewer nested aliases"
        )
    return doc


def read_spec_file(path: Path) -> Any:
    """``read_spec_text`` of a local file; ``SpecError`` if it cannot be read."""
    try:
        _check_size(path.stat().st_size, str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise SpecError(f"cannot read job spec {path}: {reason}") from None
    return read_spec_text(text, str(path))
