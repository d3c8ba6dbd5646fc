"""Load a YAML file into plain Python data plus a map of where each value stands.

Validation errors must name the file and line, so we compose the node tree
ourselves and record the line of every mapping key and list item by its path,
e.g. ("variations", "int8", "env") -> 14.
Aliases (*name) are refused and nesting is bounded: 284 bytes of nested aliases
expand to gigabytes, and thousands of nested brackets exhaust the Python stack.
"""
import datetime

import yaml

from .errors import RecipeError

_PLAIN_TAGS = (yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG)
MAX_DEPTH = 50  # a recipe nests about 6 levels deep


try:   # libyaml reads the text (PyYAML's Python reader took 150 ms over our 26 recipes; with it, 25 ms in all)
    from yaml._yaml import CParser as _Parser
except ImportError:   # a PyYAML built without libyaml
    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
        def __init__(self, text):
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _Loader(yaml.composer.Composer, _Parser, yaml.resolver.Resolver):
    """Composes nodes from the parser's events as SafeLoader does, in Python (so each node is seen here), refusing
    aliases and deep nesting (with the file and line)."""

    def __init__(self, text, path):
        yaml.reader.Reader(text)   # its check of the text's characters (libyaml's errors name no character)
        _Parser.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.path, self.depth = path, 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:  # an unknown one: a syntax error
            raise RecipeError(f"YAML alias '*{event.anchor}' is not allowed in a recipe; write the value out",
                              self.path, line)
        if self.depth >= MAX_DEPTH:
            raise RecipeError(f"nested more than {MAX_DEPTH} levels deep", self.path, line)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _convert(node, path, lines, file, scalars):
    # A recipe is plain data: an explicit tag (!!python/..., !custom) is refused, never constructed.
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise RecipeError(f"YAML tag '{node.tag}' is not allowed in a recipe (recipes are plain data)",
                          file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RecipeError("mapping keys must be plain strings", file, key_node.start_mark.line + 1)
            key = key_node.value
            _text_a_step_can_hold(key, file, key_node)
            if key in out:
                raise RecipeError(f"duplicate key '{key}'", file, key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines, file, scalars)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            items.append(_convert(item, path + (i,), lines, file, scalars))
        return items
    # Scalars: let PyYAML's safe constructor apply its usual typing (ints, bools, null).
    try:
        value = scalars.construct_object(node)   # one SafeConstructor a file, not a SafeLoader a scalar
    except yaml.constructor.ConstructorError:
        raise RecipeError(f"YAML tag '{node.tag}' is not allowed in a recipe (recipes are plain data)",
                          file, node.start_mark.line + 1) from None
    if isinstance(value, str):
        _text_a_step_can_hold(value, file, node)
    if isinstance(value, datetime.date):   # 2024-01-01 unquoted: a date object no key or record can hold
        raise RecipeError(f"{node.value} is written without quotes, which YAML reads as a date", file,
                          node.start_mark.line + 1, f'quote it: "{node.value}"')
    if isinstance(value, (bool, int, float)) and not node.style and as_text(value) != node.value:   # libyaml: ''
        lines.written[path] = node.value   # 0755 read as 493, 1.10 as 1.1, 12:30 as 750, no as False
    return value


def _text_a_step_can_hold(text, file, node):
    """An escape ("a\\0b", "\\ud800") gets past the reader's check of raw characters: plan passed, then the step's
    environment ended "unexpected ValueError: embedded null byte" (a bug in mlrun)."""
    if "\0" in text:
        raise RecipeError("a NUL character (\\0) is not allowed in a recipe's text: no environment variable, "
                          "argument or file name can hold it", file, node.start_mark.line + 1)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RecipeError(f"character U+{ord(text[e.start]):04X} (a lone surrogate) is not allowed in a recipe's "
                          "text: it is no character UTF-8 can write", file, node.start_mark.line + 1) from None


def as_text(value):
    """A YAML number or boolean as text, as a recipe's text value holds it."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class Lines(dict):
    """{path: line}, and in .written the text of each plain scalar that YAML read as another value (0755 as
    493): where a recipe wants text, that value is refused with what was written (see recipe._Checker)."""

    def __init__(self):
        super().__init__()
        self.written = {}


def load(path):
    """Return (data, lines) for a YAML file; syntax errors become RecipeError with file:line."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RecipeError(f"not UTF-8 text (byte {raw[e.start]:#04x})", path, line) from None
    loader = None
    try:
        loader = _Loader(text, path)  # checks the text's characters
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        said = str(e.problem or e.context)
        indent = text.split("\n")[line - 1] if line else ""
        indent = indent[:len(indent) - len(indent.lstrip(" \t"))]
        tab = "\t" in said or "\\t" in said or "\t" in indent   # libyaml's words name no tab
        raise RecipeError(f"YAML syntax error: {said}", path, line,
                          "indent with spaces: YAML takes no tabs there" if tab else None) from None
    except yaml.reader.ReaderError as e:  # a control character such as NUL
        raise RecipeError(f"character U+{e.character:04X} is not allowed in YAML text", path,
                          text.count("\n", 0, e.position) + 1) from None
    finally:
        if loader:
            loader.dispose()
    lines = Lines()
    if node is None:
        return {}, lines
    return _convert(node, (), lines, path, yaml.constructor.SafeConstructor()), lines
