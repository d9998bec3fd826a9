"""What leaves the worker: plain values and bounded, encodable text.

Everything the worker sends the host is built here from builtin types only, so
that encoding a frame never runs code the sandbox wrote and never fails:

- :func:`to_plain` copies a value into exact ``dict``/``list``/``str``/``int``/
  ``float``/``bool``/``None`` through the builtin types' own methods (a ``dict``
  subclass's ``items()`` or a ``str`` subclass's ``__str__`` is never called), with a
  depth and a size cap (a 985-deep list overflowed the host's stack; a 45 MB answer
  stalled it);
- :func:`clean_text` replaces lone surrogates (``json.loads('"\\ud800"')``), which
  UTF-8 cannot encode and which killed the worker at frame encoding;
- :func:`format_error` renders a traceback as CPython does, with repeated entries
  collapsed and every part capped (a RecursionError traceback was 44 KB and went
  into the next root prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

MAX_DEPTH = 100
MAX_ERROR_CHARS = 4_000
MAX_MESSAGE_CHARS = 2_000
MAX_LINE_CHARS = 200
MAX_PROBLEMS = 10
_TRACEBACK_HEAD, _TRACEBACK_TAIL = 5, 12
_MAX_INT_BITS = 14_000  # about 4,200 digits: under sys.get_int_max_str_digits()
_REPEATS_SHOWN = 3  # CPython prints an entry this often, then "[Previous line repeated N more times]"


class NotPlain(ValueError):
    """A value cannot be made plain: too deep, too large, or (strictly) not a JSON value."""


def clean_text(text: str) -> str:
    """``text`` as an exact ``str`` that encodes as UTF-8 (lone surrogates become ``?``)."""
    text = str.__str__(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def cap(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit:,} characters cut]"


def to_plain(value: Any, *, max_chars: int, strict: bool, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of ``value`` made only of exact builtin JSON types.

    Args:
        value: anything sandboxed code produced.
        max_chars: the most characters the copy may hold (strings, plus one per scalar).
        strict: refuse values JSON cannot hold; otherwise they become ``str(value)``.
        max_depth: the deepest nesting of lists and dicts allowed.

    Returns:
        The plain copy; ``json.dumps`` of it cannot call user code or fail.

    Raises:
        NotPlain: the value is nested deeper than ``max_depth``, holds more than
            ``max_chars`` characters, or (with ``strict``) is not a JSON value.
    """
    left = [max_chars]

    def charge(n: int) -> None:
        left[0] -= n
        if left[0] < 0:
            raise NotPlain(f"it is larger than {max_chars:,} characters")

    def key_of(key: Any) -> str:  # the keys json.dumps accepts, spelled as it spells them
        text = spell_key(key)
        charge(len(text))
        return text

    def spell_key(key: Any) -> str:
        if isinstance(key, str):
            return clean_text(key)
        if key is None:
            return "null"
        if type(key) is bool:
            return "true" if key else "false"
        if isinstance(key, int):
            number = int.__int__(key)
            if number.bit_length() > _MAX_INT_BITS:
                raise NotPlain(f"a dict key of {number.bit_length():,} bits has too many digits")
            return repr(number)
        if isinstance(key, float):
            return repr(float.__float__(key))
        raise NotPlain(f"a dict key of type {type(key).__name__} is not a JSON value")

    def walk(item: Any, depth: int) -> Any:
        if depth > max_depth:
            raise NotPlain(f"it is nested deeper than {max_depth} levels")
        if item is None or type(item) is bool:
            charge(1)
            return item
        if isinstance(item, str):
            text = clean_text(item)
            charge(len(text) + 1)
            return text
        if isinstance(item, int) and not isinstance(item, bool):
            number = int.__int__(item)
            if number.bit_length() > _MAX_INT_BITS:  # json (and str()) refuse such ints
                raise NotPlain(f"an int of {number.bit_length():,} bits has too many digits")
            charge(1)
            return number
        if isinstance(item, float):
            charge(1)
            return float.__float__(item)
        if isinstance(item, dict):
            charge(1)
            return {key_of(k): walk(v, depth + 1) for k, v in dict.items(item)}
        if isinstance(item, (list, tuple)):
            charge(1)
            members = list.__iter__(item) if isinstance(item, list) else tuple.__iter__(item)
            return [walk(v, depth + 1) for v in members]
        if strict:
            raise NotPlain(f"a {type(item).__name__} is not a JSON value")
        text = clean_text(str(item))
        charge(len(text) + 1)
        return text

    return walk(value, 0)


def plain_problem(value: Any, *, max_chars: int, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a decoded JSON value breaks :func:`to_plain`'s limits, or ``None`` if it keeps them.

    The host's check of what a worker sent: iterative (the host's stack is not the
    limit) and stopping at the first limit crossed, so it costs at most ``max_chars`` steps.

    Args:
        value: a JSON value as decoded from a frame.
        max_chars: as for :func:`to_plain`.
        max_depth: as for :func:`to_plain`.

    Returns:
        The reason, or ``None``.
    """
    left, stack = max_chars, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"it is nested deeper than {max_depth} levels"
        left -= len(item) + 1 if isinstance(item, str) else 1
        if left < 0:
            return f"it is larger than {max_chars:,} characters"
        if isinstance(item, dict):
            left -= sum(len(k) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def format_problems(problems: Sequence[str]) -> str:
    """Compile-time policy violations, at most :data:`MAX_PROBLEMS` of them, each capped."""
    shown = [cap(p, MAX_LINE_CHARS) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
    return cap("\n".join(shown), MAX_ERROR_CHARS)


def format_error(entries: Sequence[tuple[str, int, str]], source_line: Callable[[str, int], str],
                 type_name: str, message: str) -> str:
    """A traceback of the sandbox's own frames, bounded whatever the error.

    Args:
        entries: ``(filename, lineno, function name)`` from the outermost frame in.
        source_line: the stripped source text of ``(filename, lineno)``.
        type_name: the exception's class name.
        message: ``str()`` of the exception.

    Returns:
        At most :data:`MAX_ERROR_CHARS` characters: repeated entries collapsed as
        CPython does, the middle of a long traceback elided, each line capped.
    """
    lines: list[str] = []
    previous, repeats = None, 0
    for entry in entries:
        if entry == previous:
            repeats += 1
            if repeats >= _REPEATS_SHOWN:
                continue
        else:
            if repeats >= _REPEATS_SHOWN:
                lines.append(f"  [Previous line repeated {repeats - _REPEATS_SHOWN + 1} more times]")
            previous, repeats = entry, 0
        filename, lineno, name = entry
        lines.append(cap(f"  {filename}, line {lineno}, in {name}", MAX_LINE_CHARS) + "\n    "
                     + cap(source_line(filename, lineno), MAX_LINE_CHARS))
    if repeats >= _REPEATS_SHOWN:
        lines.append(f"  [Previous line repeated {repeats - _REPEATS_SHOWN + 1} more times]")
    if len(lines) > _TRACEBACK_HEAD + _TRACEBACK_TAIL:
        cut = len(lines) - _TRACEBACK_HEAD - _TRACEBACK_TAIL
        lines = [*lines[:_TRACEBACK_HEAD], f"  ... [{cut} more frames] ...", *lines[-_TRACEBACK_TAIL:]]
    head = ["Traceback (most recent call last):", *lines] if lines else []
    text = "\n".join([*head, f"{type_name}: {cap(message, MAX_MESSAGE_CHARS)}"])
    return clean_text(cap(text, MAX_ERROR_CHARS))
