"""Spec text → plain data plus a map from field paths to line numbers.

The format is chosen by content: text whose first non-blank character is `{` or `[` is JSON,
anything else YAML. YAML is loaded with PyYAML's safe loader only (no `!!python/...` tags).
Duplicate keys are problems, never silently overwritten. Line numbers for JSON come from
composing the same text as YAML, which accepts JSON documents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from deconv_compiler.errors import FieldPath, Problem, SpecError

_TOO_LONG = "a number too long to read (integers may have at most 4300 digits)"
MAX_NESTING = 100  # a spec needs 6 levels (model, layers, layer, weights, kernel rows...)


def _bracket_depth(text: str) -> int:
    """Deepest nesting of [ and { (brackets inside strings count too: a bound, not a parse)."""
    codes = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    steps = np.zeros(codes.shape, dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


@dataclass(frozen=True)
class SpecSource:
    """A spec's data, where it came from, and the line of each field (1-based)."""

    data: Any
    file: str | None = None
    base_dir: Path | None = None
    lines: Mapping[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int | None:
        """Line of the deepest known prefix of `path` (an unknown list item falls back to its list)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: FieldPath, message: str) -> Problem:
        return Problem(path, message, self.file, self.line_of(path))


def source_from_mapping(data: Mapping[str, Any], base_dir: Path | None = None) -> SpecSource:
    """Wrap an in-memory mapping (the Python API); relative weight paths resolve from `base_dir`
    (None: from the weights root, see `weights.WeightsFolder`)."""
    return SpecSource(data=data, file=None, base_dir=base_dir)


def read_spec_file(path: str | Path) -> SpecSource:
    """Read and parse a spec file; problems name the file as the user wrote it."""
    shown = str(path)
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise SpecError([Problem((), "is a directory, not a spec file", shown)]) from None
    except OSError as exc:
        raise SpecError([Problem((), f"cannot read spec file: {exc.strerror}", shown)]) from None
    return parse_spec_bytes(raw, file=shown, base_dir=Path(path).resolve().parent)


def parse_spec_bytes(raw: bytes, file: str | None = None, base_dir: Path | None = None) -> SpecSource:
    """UTF-8 spec text (a BOM allowed) → `parse_spec_text`; what a file or a pipe gave."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte {exc.start}); a spec is a YAML or JSON text file"
        raise SpecError([Problem((), message, file)]) from None
    return parse_spec_text(text, file=file, base_dir=base_dir)


def parse_spec_text(text: str, file: str | None = None, base_dir: Path | None = None) -> SpecSource:
    """Parse YAML or JSON text (chosen by content) into a `SpecSource`."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise SpecError([Problem((), "the spec is empty", file, 1)])
    if _bracket_depth(text) > MAX_NESTING:
        # refused before any parser recurses through it (pure-Python YAML slows to a crawl)
        kind = "JSON" if stripped[0] in "{[" else "YAML"
        message = f"invalid {kind}: nested too deeply (over {MAX_NESTING} levels)"
        raise SpecError([Problem((), message, file)])
    if stripped[0] in "{[":
        data = _load_json(text, file)
        try:
            lines = _line_map(text, file)
        except (yaml.YAMLError, SpecError, RecursionError):
            lines = {}  # valid JSON that PyYAML cannot compose: values are fine, lines unknown
        return SpecSource(data=data, file=file, base_dir=base_dir, lines=lines)
    data, lines = _load_yaml(text, file)
    return SpecSource(data=data, file=file, base_dir=base_dir, lines=lines)


def _load_json(text: str, file: str | None) -> Any:
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as exc:
        raise SpecError([Problem((), f"invalid JSON: {exc.msg}", file, exc.lineno)]) from None
    except ValueError:  # Python refuses to read integers of more than 4300 digits
        raise SpecError([Problem((), f"invalid JSON: {_TOO_LONG}", file)]) from None
    except RecursionError:
        raise SpecError([Problem((), "invalid JSON: nested too deeply", file)]) from None
    if duplicates:
        try:
            _line_map(text, file)  # the YAML walk locates each duplicate with its full path
        except (yaml.YAMLError, RecursionError):
            pass
        raise SpecError([Problem((key,), "duplicate key", file) for key in duplicates])
    return data


def _load_yaml(text: str, file: str | None) -> tuple[Any, dict[FieldPath, int]]:
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
    except yaml.YAMLError as exc:
        raise SpecError([Problem((), f"invalid YAML: {str(exc).splitlines()[0]}", file)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError([Problem((), "the spec is empty", file, 1)])
        _refuse_alias_bombs(node, file)
        lines: dict[FieldPath, int] = {}
        problems: list[Problem] = []
        _walk(node, (), lines, problems, file)
        if problems:
            raise SpecError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or exc.context or "unreadable"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(exc.problem):
            reason = f"{reason} (only plain YAML is accepted: no tags that build objects)"
        raise SpecError([Problem((), f"invalid YAML: {reason}", file, line)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem((), f"invalid YAML: {str(exc).splitlines()[0]}", file)]) from None
    except ValueError:  # Python refuses to read integers of more than 4300 digits
        raise SpecError([Problem((), f"invalid YAML: {_TOO_LONG}", file)]) from None
    except RecursionError:
        raise SpecError([Problem((), "invalid YAML: nested too deeply", file)]) from None
    finally:
        loader.dispose()
    return data, lines


# A YAML alias repeats a whole subtree without repeating its text ("billion laughs": 9 lines that
# expand to 10**9 values). Documents that expand this far beyond their own size are refused
# before anything walks or builds the expansion.
MAX_EXPANDED_VALUES = 1_000_000
MAX_EXPANSION_RATIO = 10


def _refuse_alias_bombs(root: yaml.Node, file: str | None) -> None:
    sizes: dict[int, int] = {}  # memoized by node identity: aliases share node objects

    def expanded(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(expanded(k) + expanded(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(expanded(item) for item in node.value)
        else:
            size = 1
        sizes[id(node)] = size
        return size

    total = expanded(root)
    if total > MAX_EXPANDED_VALUES and total > MAX_EXPANSION_RATIO * len(sizes):
        message = (
            f"refused: YAML aliases expand this document to {total:,} values from {len(sizes):,} "
            "written ones (an alias bomb?)"
        )
        raise SpecError([Problem((), message, file)])


def _line_map(text: str, file: str | None = None) -> dict[FieldPath, int]:
    """Lines of a JSON document, read by composing it as YAML (tabs, legal JSON whitespace
    that YAML refuses for indentation, become spaces: line numbers do not move)."""
    loader = yaml.SafeLoader(text.replace("\t", " "))  # YAMLError here: the caller drops the lines
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[FieldPath, int] = {}
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), lines, problems, file)
    if problems:
        raise SpecError(problems)
    return lines


def _walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    problems: list[Problem],
    file: str | None,
) -> None:
    """Record the line of every field and report duplicate keys."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str"):
                shown = key if isinstance(key_node, yaml.ScalarNode) else "a collection"
                problems.append(Problem(path, f"keys must be strings, got {shown}", file, line))
                continue
            if key in seen:
                problems.append(Problem((*path, key), "duplicate key", file, line))
                continue
            seen.add(key)
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, problems, file)
