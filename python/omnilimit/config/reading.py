"""Reading a configuration file: the YAML parsed within its limits (size, aliases, nesting, no key
given twice), and the words of the errors it raises."""

from __future__ import annotations

import os
from typing import Any

import yaml

from omnilimit._shown import printable, shown
from omnilimit.errors import ConfigError

MAX_FILE_BYTES = 1 << 20  # a configuration file is a few KB; a larger one is refused, never read whole
MAX_ALIASES = 100  # alias references (*name) in one document
MAX_DEPTH = 32  # levels of nesting


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The parsed YAML document of a configuration file, not yet validated. Raises ConfigError for
    a file that is too large, not UTF-8, malformed, bounded badly (more than ``MAX_ALIASES``
    aliases or ``MAX_DEPTH`` levels: a file written to exhaust memory or the stack), with a key
    given twice, or empty; OSError only when it cannot be read. The whole file is parsed within a
    second and a few MB whatever it holds."""
    source = os.fspath(path)
    with open(source, "rb") as stream:
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"the file is larger than {MAX_FILE_BYTES:,} bytes: not a configuration", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})", source=source) from None
    try:
        document = yaml.load(text, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as error:
        raise ConfigError(yaml_error_text(error), source=source) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"malformed YAML: {printable(str(error))[:300]}", source=source) from None
    except Exception as error:  # a value the YAML constructors cannot make (huge numbers, bad floats...)
        detail = printable(str(error))[:200]
        raise ConfigError(
            f"malformed YAML: a value cannot be read ({type(error).__name__}: {detail})", source=source
        ) from None
    if document is None:
        raise ConfigError("the file is empty: it needs a 'providers' section", source=source)
    return document


def yaml_error_text(error: yaml.MarkedYAMLError) -> str:
    """Where PyYAML found the problem and, when it knows, where the construct it was reading
    starts: ``line 6, column 1: found unexpected end of stream, while scanning a quoted scalar that
    starts at line 4, column 12`` (an unclosed quote is found at the end of the file, but is where
    it was opened)."""

    def at(mark: yaml.Mark | None) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    found, started = at(error.problem_mark), at(error.context_mark)
    text = printable(error.problem or "malformed YAML")
    if error.context:
        text += f", {printable(error.context)}"
        if started and started != found:
            text += f" that starts at {started}"
    return f"{found}: {text}" if found else text


def file_error_message(path: str, error: BaseException) -> str:
    """What a command says of a configuration file it could not use: a ConfigError as it is, an
    unreadable file or one that is not UTF-8 with the path."""
    if isinstance(error, UnicodeDecodeError):
        return f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
    if isinstance(error, OSError):
        return f"{path}: cannot read the file: {error.strerror or error}"
    return str(error)


class _ConfigLoader(yaml.SafeLoader):
    """A SafeLoader for configuration files: it refuses a key given twice in one mapping (PyYAML
    keeps the last one silently, which would drop a role's settings without a word), accepts merge
    keys (``<<: *defaults``) as ``yaml.safe_load`` does, and stops a document with more than
    ``MAX_ALIASES`` aliases or ``MAX_DEPTH`` levels of nesting (an alias bomb, or nesting deep
    enough to exhaust the stack) at the place it goes wrong."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name) in one file", self._mark()
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self._mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> yaml.Mark:
        """Where the next event starts in the file."""
        return self.peek_event().start_mark  # type: ignore[no-untyped-call, no-any-return]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # merged keys may be overridden: not duplicates
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {shown(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
