"""The sandbox policy: code LLMs write must run; each escape family must fail, by any spelling."""

from __future__ import annotations

import pytest

from sandbox import Sandbox
from sandbox.boundary.compiler import compile_cell
from sandbox.boundary.guards import DENIED_ATTRIBUTES


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout=5.0, confinement="none") as sandbox:
        yield sandbox


LLM_CODE = [
    ("counts = {}\nfor w in 'a b a'.split():\n    counts[w] = counts.get(w, 0) + 1\ncounts['a'] += 10\nprint(counts)",
     "{'a': 12, 'b': 1}"),
    ("class Acc:\n    def __init__(self):\n        self.total = 0\n    def __repr__(self):\n        return f'Acc({self.total})'\n"
     "a = Acc()\na.total += 5\nprint(a)", "Acc(5)"),
    ("n: int = 3\nnames: list = ['x']\nprint(n, names)", "3 ['x']"),
    ("print('{} has {:,} items; {name!r}'.format('list', 12345, name='q'))", "list has 12,345 items; 'q'"),
    ("def report(xs):\n    for x in xs:\n        print('item', x)\nreport([1, 2])", "item 1\nitem 2"),
    ("xs = [3, 1, 2]\nprint(sorted(xs), min(xs), max(xs), sum(xs), list(zip(xs, 'abc')), list(enumerate(xs))[0])",
     "[1, 2, 3] 1 3 6 [(3, 'a'), (1, 'b'), (2, 'c')] (0, 3)"),
    ("pairs = [(1, ('a', 'b')), (2, ('c', 'd'))]\nfor i, (x, y) in pairs:\n    print(i, x + y)", "1 ab\n2 cd"),
    ("from collections import Counter, defaultdict\nc = Counter('abracadabra')\nd = defaultdict(list)\n"
     "d['k'].append(1)\nd['k'] += [2]\nprint(c.most_common(2), dict(d))", "[('a', 5), ('b', 2)] {'k': [1, 2]}"),
    ("import re, json\nm = re.search(r'(?P<y>\\d{4})', 'in 1999')\nprint(m.group('y'), m.groupdict(), json.dumps({'k': [1]}))",
     "1999 {'y': '1999'} {\"k\": [1]}"),
    ("class Base:\n    def __init__(self, x):\n        self.x = x\nclass Child(Base):\n    def __init__(self):\n"
     "        super().__init__(7)\nprint(Child().x, type(Child()).__name__, isinstance(Child(), Base))", "7 Child True"),
    ("def f(*args, **kw):\n    return len(args), sorted(kw)\nargs = [1, 2]\nkw = {'b': 1, 'a': 2}\nprint(f(*args, **kw))",
     "(2, ['a', 'b'])"),
    ("d = {'a': 3, 'b': 9}\nprint(max(d, key=d.get), [k for k, v in d.items() if v > 4], {v: k for k, v in d.items()})",
     "b ['b'] {3: 'a', 9: 'b'}"),
    ("def gen(n):\n    for i in range(n):\n        yield i * i\nprint(list(gen(4)), sum(x for x in range(5)))", "[0, 1, 4, 9] 10"),
    ("import datetime, statistics, textwrap, math\nd = datetime.datetime.strptime('2024-01-02', '%Y-%m-%d')\n"
     "print(d.year, statistics.mean([1, 2, 3]), textwrap.shorten('a b c d e f', 7), math.sqrt(16))", "2024 2 a [...] 4.0"),
    ("try:\n    int('x')\nexcept ValueError as e:\n    print('bad:', e)", "bad: invalid literal for int() with base 10: 'x'"),
    ("total = 0\ndef add(n):\n    global total\n    total += n\nadd(4)\nif (k := total * 2) > 5:\n    print(k, '%d%%' % 50)",
     "8 50%"),
    ("xs = list(range(10))\ndel xs[0]\nprint(xs[1:3], xs[::-4], 'abc'[-1], f'{3.14159:.2f}')", "[2, 3] [9, 5, 1] c 3.14"),
    ("from typing import List, Dict\ndef f(x: List[int]) -> Dict[str, int]:\n    return {'n': len(x)}\nf([1, 2])",
     "{'n': 2}"),
    ("import random\nrandom.seed(1)\nprint(len(random.sample(range(100), 5)))", "5"),
    ("import functools, itertools, heapq, bisect\nprint(functools.reduce(lambda a, b: a + b, [1, 2, 3]), "
     "list(itertools.islice(itertools.count(), 3)), heapq.nlargest(1, [4, 9]), bisect.bisect([1, 3], 2))", "6 [0, 1, 2] [9] 1"),
]


@pytest.mark.parametrize("code,expected", LLM_CODE, ids=[f"llm{i}" for i in range(len(LLM_CODE))])
def test_llm_style_code_runs(sb, code, expected):
    result = sb.execute(code)
    assert result.error is None, result.error
    assert result.output.strip() == expected


ESCAPES = {
    # attribute names computed at run time, through every builtin that takes a name
    "computed_getattr": "getattr((), '__cla' + 'ss__')",
    "map_getattr": "list(map(getattr, [()], ['__class__']))",
    "sorted_key_getattr": "sorted([()], key=lambda o: getattr(o, '__class__'))",
    "setattr_dunder": "class A:\n    pass\nsetattr(A, '__getattr__', print)",
    # format strings
    "format_map_attr": "'{0.__class__}'.format_map({0: ()})",
    "format_kw_attr": "'{x.__class__.__base__}'.format(x=1)",
    "format_via_type": "type('').format('{0.__class__}', 1)",
    "format_index_into_globals": "def f():\n    pass\n'{0.__globals__}'.format(f)",
    "fstring_dunder": "f'{().__class__}'",
    # frames, code objects, tracebacks
    "getattr_gi_frame": "def g():\n    yield 1\nx = g()\ngetattr(x, 'gi_frame')",
    "getattr_gi_code": "def g():\n    yield 1\ngetattr(g(), 'gi' + '_code')",
    "traceback_by_name": "try:\n    1/0\nexcept Exception as e:\n    getattr(e, '__traceback__')",
    # modules and imports
    "getattr_module_hop": "import re\ngetattr(re, 'enum')",
    "from_import_submodule": "from json import decoder",
    "import_dotted": "import os.path",
    "import_builtins": "import builtins",
    "import_importlib": "import importlib",
    "type_of_proxy": "import re\nT = type(re)\nT().enum",
    "proxy_subscript": "import re\nre['compile']",
    # classes and type construction
    "three_arg_type": "type('X', (), {'y': 1})",
    "subclass_proxy": "import json\nclass J(type(json)):\n    pass",
    "del_dunder_method": "class A:\n    def __del__(self):\n        pass",
    # writes into shared state
    "setattr_module": "import json\nsetattr(json, 'dumps', print)",
    "library_function_attr": "import json\njson.dumps.flag = 1",
    "library_class_attr": "import collections\ncollections.Counter.most_common = None",
    "delattr_module": "import math\ndelattr(math, 'pi')",
    # builtins that should not exist
    "eval_by_name": "f = eval",
    "vars_globals": "vars()",
    "globals_call": "globals()",
    "compile_builtin": "compile('1', 'x', 'eval')",
    "breakpoint": "breakpoint()",
}


@pytest.mark.parametrize("code", list(ESCAPES.values()), ids=list(ESCAPES))
def test_escape_family_is_blocked(sb, code):
    result = sb.execute(code)
    assert result.error, f"expected an error, got output {result.output!r}"
    assert result.limit is None and not result.restarted


# Probes that must run and answer "no": a name the policy denies looks absent to hasattr and dir,
# so code cannot map what is there to reach for.
PROBES = {
    "hasattr_dunder": ("print(hasattr((), '__class__'), hasattr((), 'count'))", "False True"),
    "hasattr_frame": ("def g():\n    yield 1\nprint(hasattr(g(), 'gi_frame'), hasattr(g(), 'send'))", "False True"),
    "hasattr_module_hop": ("import re\nprint(hasattr(re, 'enum'), hasattr(re, 'compile'))", "False True"),
    "dir_of_a_builtin": ("print([n for n in dir(()) if n.startswith('_')], 'count' in dir(()))", "[] True"),
    "dir_of_own_class": ("class A:\n    x = 1\nprint([n for n in dir(A) if n.startswith('_')], 'x' in dir(A))",
                         "[] True"),
}


@pytest.mark.parametrize("code,expected", list(PROBES.values()), ids=list(PROBES))
def test_probes_see_denied_names_as_absent(sb, code, expected):
    result = sb.execute(code)
    assert result.error is None, result.error
    assert result.output.strip() == expected


DENIED_BY_NAME = {  # each attribute names a way to frames, code or globals; refused by name, before any lookup
    "gi_frame": "def g():\n    yield 1\nx = g()", "gi_code": "def g():\n    yield 1\nx = g()",
    "cr_frame": "x = 1", "tb_frame": "x = 1", "f_globals": "x = 1", "co_code": "x = 1",
}


@pytest.mark.parametrize("name,setup", list(DENIED_BY_NAME.items()), ids=list(DENIED_BY_NAME))
def test_frame_and_code_attributes_are_refused_by_name(sb, name, setup):
    """By name, whatever the object: a lookup on an object that has the attribute must never run."""
    error = sb.execute(f"{setup}\ngetattr(x, {name!r})").error
    assert f"AttributeError: access to attribute {name!r} is not allowed in the sandbox" in error


# The denied names known today, pinned so that dropping one from DENIED_ATTRIBUTES fails its case
# (parametrizing over the set alone would drop the case with it); names added later join by the union.
PINNED_DENIED = {
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "cr_origin", "ag_frame", "ag_code",
    "ag_await", "tb_frame", "tb_next", "f_back", "f_builtins", "f_code", "f_generator", "f_globals", "f_locals",
    "f_trace", "co_code",
}
# Each is spelled as a class attribute. A name starting with "_" or one that is not an identifier
# cannot be bound in a cell's class body (other rules refuse those reads); none is today.
CLASS_DEFINABLE_DENIED = sorted(n for n in PINNED_DENIED | DENIED_ATTRIBUTES
                                if n.isidentifier() and not n.startswith("_"))


@pytest.mark.parametrize("name", CLASS_DEFINABLE_DENIED)
def test_denied_attributes_are_refused_even_when_the_value_is_harmless(sb, name):
    """Stops reading a denied name where the value check alone would pass it (a class's own ``gi_frame = 1``)."""
    result = sb.execute(f"class A:\n    {name} = 1\nprint(getattr(A(), {name!r}))")
    assert f"access to attribute {name!r}" in (result.error or ""), result
    assert result.output == ""


def test_a_cell_cannot_rebind_a_guard_name(sb):
    """Stops ``_write_ = lambda o: o`` replacing the write guard so a later cell changes a library class."""
    rebind = sb.execute("_write_ = lambda o: o")
    sb.execute("import textwrap\ntextwrap.TextWrapper.width = 5")
    after = sb.execute("import textwrap\nprint(getattr(textwrap.TextWrapper, 'width', 'absent'))")
    assert after.output == "absent\n", after
    assert rebind.error.startswith("SyntaxError") and '"_write_" is an invalid variable name' in rebind.error


def test_underscore_attributes_are_refused_when_the_cell_compiles():
    """Stops ``().__class__``, the first hop of every subclass walk, before the cell ever runs."""
    with pytest.raises(SyntaxError, match='"__class__" is an invalid attribute name'):
        compile_cell("x = ().__class__", "<cell>")


def test_class_level_tables_of_libraries_are_not_shared(sb):
    code = ("import textwrap\nt = textwrap.TextWrapper.unicode_whitespace_trans\nt[65] = 'Z'\n"
            "print(textwrap.TextWrapper.unicode_whitespace_trans.get(65), textwrap.fill('AAA'))")
    result = sb.execute(code)
    assert result.error is None and result.output == "None AAA\n"


def test_module_proxies_are_read_only_and_safe_to_reimport(sb):
    assert "TypeError" in sb.execute("import json\njson.loads = None").error
    assert sb.execute("import json\nprint(json.loads('[1]'))").output == "[1]\n"


def test_host_error_crosses_without_attributes():
    def failing(prompt):
        error = ValueError("boom")
        error.secret_payload = "hidden"
        raise error

    with Sandbox(tools={"ask": failing}, confinement="none") as sb:
        result = sb.execute("try:\n    ask('x')\nexcept ValueError as e:\n    print(e, getattr(e, 'secret_payload', 'none'))")
        assert result.output == "ask() failed: ValueError: boom none\n"


def test_secrets_are_redacted_from_host_errors(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "supersecretvalue123")

    def leaky(prompt):
        raise RuntimeError("auth failed for key supersecretvalue123, header Bearer abcdefghijklmnop")

    with Sandbox(tools={"ask": leaky}, confinement="none") as sb:
        error = sb.execute("ask('x')").error
    assert "supersecretvalue123" not in error and "abcdefghijklmnop" not in error
    assert "[redacted]" in error
