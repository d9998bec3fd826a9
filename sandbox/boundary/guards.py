"""The runtime half of the sandbox policy: guards, builtins and module proxies.

RestrictedPython only rewrites attribute, item, write and iteration operations
into calls to the functions defined here; these functions *are* the policy. It
runs inside the worker process, so a bug here is contained by the OS confinement
(``sandbox.boundary.confine``), but every rule below exists to stop a known escape family:

- guard decisions never run code the sandbox wrote: names must be exact ``str``
  before anything hashes them, and type tables are looked up by ``id``;
- no metaclass, and no class a metaclass built (enums, ABCs, ``typing.Any``),
  reaches sandboxed code: ``type()`` answers with itself for them, their
  attributes are refused, and they cannot be subclassed;

- underscore and frame/code/traceback attribute names are refused (``__class__``
  walks to ``object.__subclasses__``; ``gi_frame.f_back.f_globals`` reaches the
  worker's globals, CVE-2023-37271);
- every value a guarded lookup returns is checked: module objects, frames, code,
  tracebacks and a fixed set of dangerous callables (``eval``, ``open``, real
  ``type``, ``functools.update_wrapper``, ``operator.attrgetter``,
  ``string.Formatter``...) never reach sandboxed code, whatever path found them;
- modules are never handed in: each allowed module is a read-only proxy built from
  an explicit allowlist (``re.enum.sys``, ``json.codecs.open`` and friends);
- ``str.format`` resolves ``{0.attr[key]}`` fields through these same guards
  (CVE-2023-41039), however the bound method was found (``super(S, s).format``);
- ``super().__init__`` re-initialises only the sandbox's own objects; special
  methods must be the argument-checking functions their ``def`` made, and
  subclasses of hashable builtins are unhashable (no library cache holds them);
- writes reach only builtin containers and objects of classes the sandbox defined
  (``json.dumps = ...`` or poisoning a library's module-level table is refused), and
  mutable containers read off library classes come back as copies.

Decisions for the methods of hot builtin types are cached per (type, name), which
keeps a guarded loop within a small factor of plain CPython.
"""

from __future__ import annotations

import _string  # the C helper behind string.Formatter's field-name parsing
import bisect
import builtins
import collections
import datetime
import difflib
import functools
import heapq
import itertools
import json
import math
import operator
import random
import re
import statistics
import string
import sys
import textwrap
import time
import types
import typing
import weakref
from collections.abc import Callable
from typing import Any

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from .compiler import CHECK_ARGS, CLASS_DUNDERS, READABLE_DUNDERS


# Attribute names that lead to frames, code or the internals of generators and
# coroutines (they do not start with "_", so the underscore rule misses them).
DENIED_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "cr_origin",
    "ag_frame", "ag_code", "ag_await", "tb_frame", "tb_next", "f_back", "f_builtins",
    "f_code", "f_generator", "f_globals", "f_locals", "f_trace", "co_code",
})

DENIED_TYPES = frozenset({
    types.ModuleType, types.FrameType, types.TracebackType, types.CodeType,
    types.CellType,
})
# Guard decisions look types up by id(): hashing or comparing an object the sandbox
# made would run its __hash__/__eq__ (a str subclass posing as a cached name).
_DENIED_TYPE_IDS = frozenset(id(t) for t in DENIED_TYPES)

# Callables and classes that turn names into attribute access, run code, touch
# files, or create classes outside the sandbox's class hook.
_DENIED_VALUES: tuple[Any, ...] = (
    builtins.eval, builtins.exec, builtins.compile, builtins.open, builtins.input,
    builtins.breakpoint, builtins.globals, builtins.locals, builtins.vars,
    builtins.getattr, builtins.setattr, builtins.delattr, builtins.__import__,
    builtins.__build_class__, builtins.type, builtins.memoryview, builtins.help,
    functools.update_wrapper, functools.wraps, functools.singledispatch,
    operator.attrgetter, operator.methodcaller, string.Formatter, string.Template,
    typing.get_type_hints, typing.ForwardRef, str.format, str.format_map,
)
DENIED_IDS = {id(v): v for v in _DENIED_VALUES}

MUTABLE_CONTAINERS = (list, dict, set, bytearray, collections.deque)

# Types whose public attributes are plain methods or numbers: no value check needed.
# Builtin types live as long as the worker, so their ids never get reused.
_FAST_ATTR_TYPES = frozenset((
    str, bytes, int, float, complex, bool, type(None), list, dict, set, frozenset,
    tuple, range, slice, bytearray, collections.Counter, collections.defaultdict,
    collections.OrderedDict, collections.deque,
))
_METHOD_TYPES = frozenset({types.MethodDescriptorType, types.WrapperDescriptorType,
                           types.ClassMethodDescriptorType, types.BuiltinMethodType, types.BuiltinFunctionType})
_FAST_ITEM_TYPES = frozenset({dict, list, tuple, str, bytes, range, collections.Counter,
                              collections.defaultdict, collections.OrderedDict})

# Attributes refused on instances of one builtin type: AttributeError.obj is the
# object a failed lookup looked at, often a library's internals (a real module).
_DENIED_INSTANCE_ATTRIBUTES = {id(AttributeError): frozenset({"obj"})}


def _typing_internal_types() -> frozenset[int]:
    """ids of typing's own classes: its aliases forward attribute reads to collections.abc
    (``typing.Mapping.register(int)`` poisons the ABC registry of the whole worker)."""
    found = {type(getattr(typing, name)) for name in dir(typing) if not name.startswith("__")}
    found |= {t for t in vars(typing).values() if isinstance(t, type)}
    return frozenset(id(t) for t in found if getattr(t, "__module__", "") == "typing")


_TYPING_TYPE_IDS = _typing_internal_types()


def is_metaclass(value: Any) -> bool:
    """Whether ``value`` is ``type`` or a subclass of it: called with three arguments, any
    metaclass (``EnumType``, ``ABCMeta``...) builds a class from a dict with any dunder."""
    return issubclass(type(value), type) and issubclass(value, type)


def has_own_metaclass(value: Any) -> bool:
    """Whether ``value`` is a class built by a metaclass other than ``type``: such classes
    build more classes through their metaclass's hooks (``Enum('X', {'__init__': f})``)."""
    return issubclass(type(value), type) and type(value) is not type


class SandboxClasses:
    """Registry of classes created by sandboxed code (the only non-containers it may write to).

    Keyed by ``id``: a WeakSet would hash the class, and the registry must never run
    code the sandbox wrote. The weak reference tells a live class from a reused id.
    """

    def __init__(self) -> None:
        self._classes: dict[int, weakref.ref[type]] = {}

    def add(self, cls: type) -> None:
        key = id(cls)
        self._classes[key] = weakref.ref(cls, lambda _ref: self._classes.pop(key, None))

    def is_sandbox_class(self, cls: Any) -> bool:
        ref = self._classes.get(id(cls))
        return ref is not None and ref() is cls

    def owns(self, obj: Any) -> bool:
        return self.is_sandbox_class(obj) or self.is_sandbox_class(type(obj))


def _writable_name(name: Any) -> str:
    """``name`` if sandboxed code may set or delete it: an exact str (never a subclass
    whose methods would run here) that does not start with ``_``."""
    if type(name) is not str:
        raise TypeError(f"attribute name must be a string, not {type(name).__name__}")
    if name.startswith("_"):
        raise _deny(name)
    return name


def _deny(name: str) -> AttributeError:
    # A fresh error: Python's own AttributeError carries .obj, the object looked at.
    return AttributeError(f"access to attribute {name!r} is not allowed in the sandbox")


class _ProxyBase:
    __slots__ = ()


def make_module_proxy(name: str, attrs: dict[str, Any]) -> Any:
    """A read-only stand-in for module ``name`` exposing only ``attrs``."""
    table = dict(attrs, __name__=name)

    class ModuleProxy(_ProxyBase):
        __slots__ = ()

        def __getattr__(self, item: str) -> Any:
            try:
                return table[item]
            except KeyError:
                raise AttributeError(f"module {name!r} has no attribute {item!r} in the sandbox") from None

        def __setattr__(self, item: str, value: Any) -> None:
            raise AttributeError(f"module {name!r} is read-only in the sandbox")

        def __delattr__(self, item: str) -> None:
            raise AttributeError(f"module {name!r} is read-only in the sandbox")

        def __repr__(self) -> str:
            return f"<module {name!r} (sandboxed)>"

        def __dir__(self) -> list[str]:
            return sorted(k for k in table if not k.startswith("_"))

    ModuleProxy.__name__ = ModuleProxy.__qualname__ = f"module_{name}"
    return ModuleProxy()


def _public(module: types.ModuleType, names: str | None = None) -> dict[str, Any]:
    keys = names.split() if names else [k for k in dir(module) if not k.startswith("_")]
    return {k: getattr(module, k) for k in keys}


# The allowlist. Whole-module entries list only modules made of plain functions
# and constants; the others name what LLM code uses and nothing that leads out.
_MODULE_ALLOWLIST: dict[str, Callable[[], dict[str, Any]]] = {
    "math": lambda: _public(math),
    "itertools": lambda: _public(itertools),
    "heapq": lambda: _public(heapq, "heappush heappop heapify heapreplace heappushpop nlargest nsmallest merge"),
    "bisect": lambda: _public(bisect, "bisect bisect_left bisect_right insort insort_left insort_right"),
    "re": lambda: _public(re, "compile search match fullmatch split findall finditer sub subn escape "
                              "error Pattern Match IGNORECASE I MULTILINE M DOTALL S VERBOSE X ASCII A UNICODE U"),
    "json": lambda: _public(json, "dumps loads JSONDecodeError"),
    "collections": lambda: _public(collections, "Counter defaultdict OrderedDict deque namedtuple ChainMap"),
    "functools": lambda: _public(functools, "reduce partial lru_cache cache cmp_to_key"),
    "statistics": lambda: _public(statistics, "mean fmean geometric_mean harmonic_mean median median_low "
                                              "median_high median_grouped mode multimode quantiles pstdev "
                                              "pvariance stdev variance correlation covariance "
                                              "linear_regression NormalDist StatisticsError"),
    "datetime": lambda: _public(datetime, "date datetime time timedelta timezone MINYEAR MAXYEAR"),
    "string": lambda: _public(string, "ascii_letters ascii_lowercase ascii_uppercase digits hexdigits "
                                      "octdigits punctuation printable whitespace capwords"),
    "textwrap": lambda: _public(textwrap, "wrap fill shorten dedent indent TextWrapper"),
    "difflib": lambda: _public(difflib, "SequenceMatcher get_close_matches unified_diff context_diff ndiff Differ"),
    "random": lambda: _public(random, "random uniform randint randrange choice choices sample shuffle seed gauss"),
    # Also what datetime's C code imports for strftime/timetuple (through the sandbox's __import__).
    "time": lambda: _public(time, "time monotonic perf_counter strftime strptime gmtime localtime mktime "
                                  "struct_time asctime ctime timezone"),
    "typing": lambda: _public(typing, "Any Optional Union List Dict Tuple Set FrozenSet Iterable Iterator "
                                      "Callable Sequence Mapping"),
}
ALLOWED_MODULES = frozenset(_MODULE_ALLOWLIST)

# Modules that C functions import lazily through the *calling frame's* ``__import__``
# (``datetime.strptime`` imports ``_strptime``). Sandboxed code cannot spell these
# names (the compiler rejects ``_`` names), so only such C callers reach them, and
# the module object goes back to that C code, never to the cell.
_C_LAZY_IMPORTS = frozenset({"_strptime"})


class Policy:
    """The guard functions and builtins for one sandbox namespace."""

    def __init__(self, print_fn: Callable[..., None]):
        self.classes = SandboxClasses()
        # (builtin type, exact-str name) pairs already vetted (see _fast_getattr)
        self._fast_attrs: set[tuple[type, str]] = set()
        self.modules = {name: make_module_proxy(name, self._vet_module(build()))
                        for name, build in _MODULE_ALLOWLIST.items()}
        self._proxy_type_ids = frozenset(id(type(p)) for p in self.modules.values())
        self.getattr = _fast_getattr(self._fast_attrs, self._getattr_slow)
        self.getitem = _fast_getitem(self._getitem_slow)
        self._formatter = _GuardedFormatter(self)
        self._print = print_fn

    def _vet_module(self, attrs: dict[str, Any]) -> dict[str, Any]:
        vetted = {}
        for key, value in attrs.items():
            if id(type(value)) in _DENIED_TYPE_IDS or id(value) in DENIED_IDS or is_metaclass(value):
                continue
            # Module-level tables are shared with the worker's own code: hand out copies.
            vetted[key] = value.copy() if isinstance(value, MUTABLE_CONTAINERS) else value
        return vetted

    # -- attribute access ------------------------------------------------------------


    def getattr_builtin(self, obj: Any, name: str, *default: Any) -> Any:
        """The sandbox's ``getattr(obj, name[, default])``."""
        if len(default) > 1:
            raise TypeError(f"getattr expected at most 3 arguments, got {2 + len(default)}")
        try:
            return self.getattr(obj, name)
        except AttributeError:
            if default:
                return default[0]
            raise

    def hasattr(self, obj: Any, name: str) -> bool:
        try:
            self.getattr(obj, name)
        except AttributeError:
            return False
        return True

    def _getattr_slow(self, obj: Any, name: str) -> Any:
        if type(name) is not str:
            raise TypeError(f"attribute name must be a string, not {type(name).__name__}")
        if name.startswith("_"):
            return self._dunder(obj, name)
        if name in DENIED_ATTRIBUTES:
            raise _deny(name)
        if name in ("format", "format_map") and (isinstance(obj, str) or obj is str):
            return self._string_method(obj, name)
        kind = type(obj)
        if id(kind) in self._proxy_type_ids:
            return getattr(obj, name)  # proxy values were vetted when the proxy was built
        if id(kind) in _TYPING_TYPE_IDS or has_own_metaclass(obj):
            # typing's aliases forward reads to collections.abc; a class a metaclass built
            # hands out that metaclass's hooks (ChainMap.register, ChainMap.mro() -> the ABCs).
            raise _deny(name)
        denied_here = _DENIED_INSTANCE_ATTRIBUTES.get(id(kind))
        if denied_here is not None and name in denied_here:
            raise _deny(name)
        try:
            value = getattr(obj, name)
        except AttributeError:
            raise AttributeError(f"{kind.__name__!r} object has no attribute {name!r}") from None
        self.check_value(value, name)
        if name in ("format", "format_map") and type(value) is types.BuiltinMethodType \
                and isinstance(value.__self__, str):
            # str.format bound by another route (super(S, s).format): its {0.__globals__} fields
            # would be resolved without the guards.
            return self._string_method(value.__self__, name)
        if isinstance(value, MUTABLE_CONTAINERS) and not self.classes.owns(value) \
                and not self._sandbox_made(obj, name, value):
            # e.g. textwrap.TextWrapper.unicode_whitespace_trans: a class-level table
            # shared by every user of the library, also when read through a subclass.
            return _copy_container(value)
        if kind in _FAST_ATTR_TYPES and type(getattr(kind, name, None)) in _METHOD_TYPES:
            # Only methods: a data attribute (slice.start, defaultdict.default_factory) differs per
            # object, and a cached name skips the value check.
            self._fast_attrs.add((kind, name))
        return value

    def _dunder(self, obj: Any, name: str) -> Any:
        if name in READABLE_DUNDERS:
            value = getattr(obj, name, None)
            if isinstance(value, str) or value is None:
                return value
        if name == "__init__" and type(obj) is super and self.classes.owns(obj.__self__):
            # Only on the sandbox's own objects: super(type(typing.List), typing.List).__init__(...)
            # re-initialised a library object shared with every later cell.
            return getattr(obj, name)
        raise _deny(name)

    def _string_method(self, obj: Any, name: str) -> Callable[..., str]:
        fmt = self._formatter
        if obj is str:
            return fmt.format_unbound if name == "format" else fmt.format_map_unbound
        if name == "format":
            return lambda *args, **kwargs: fmt.vformat(obj, args, kwargs)
        return lambda mapping: fmt.vformat(obj, (), mapping)

    def check_value(self, value: Any, name: str = "value") -> None:
        """Refuse modules, frames, code, dangerous callables and metaclasses, however found."""
        if id(type(value)) in _DENIED_TYPE_IDS or id(value) in DENIED_IDS:
            raise _deny(name)
        if issubclass(type(value), type) and (type(value) is not type or issubclass(value, type)):
            raise _deny(name)  # a metaclass, or a class built by one (has_own_metaclass, inlined)
        if type(value) is types.GenericAlias and isinstance(value.__origin__, type) \
                and (is_metaclass(value.__origin__) or has_own_metaclass(value.__origin__)):
            raise _deny(name)  # type[X] calls the real type

    def check_args(self, *values: Any) -> None:
        """Refuse, as :meth:`check_value` does, what C code passes a sandbox special method."""
        for value in values:
            self.check_value(value, "argument")

    def _sandbox_made(self, obj: Any, name: str, value: Any) -> bool:
        """Whether container ``value`` read as ``obj.name`` belongs to the sandbox: stored on
        a sandbox object itself or defined in a sandbox class, not inherited from a library."""
        if not self.classes.owns(obj):
            return False
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            own = {}
        if type(own) is dict and own.get(name, _MISSING) is value:
            return True
        mro = type.__dict__["__mro__"].__get__(obj if isinstance(obj, type) else type(obj))
        for cls in mro:
            found = type.__dict__["__dict__"].__get__(cls).get(name, _MISSING)
            if found is not _MISSING:
                return found is value and self.classes.is_sandbox_class(cls)
        return False

    # -- items, writes, iteration ----------------------------------------------------

    def _getitem_slow(self, obj: Any, key: Any) -> Any:
        if id(type(obj)) in self._proxy_type_ids:
            raise TypeError("module objects are not subscriptable")
        value = obj[key]
        self.check_value(value, "item")
        return value

    def write(self, obj: Any) -> Any:
        """``_write_``: the object about to be assigned into, if the sandbox may change it."""
        if isinstance(obj, MUTABLE_CONTAINERS) or self.classes.owns(obj):
            return obj
        raise TypeError(f"objects of type {type(obj).__name__!r} cannot be modified in the sandbox")

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        setattr(self.write(obj), _writable_name(name), value)

    def delattr(self, obj: Any, name: str) -> None:
        delattr(self.write(obj), _writable_name(name))

    # -- imports and classes ---------------------------------------------------------

    def import_module(self, name: str, globals_: Any = None, locals_: Any = None,
                      fromlist: Any = (), level: int = 0) -> Any:
        """``__import__``: exact allowlisted names at level 0, answered with the proxy."""
        if type(name) is not str:
            raise ImportError("module names must be strings")
        if level == 0 and name in _C_LAZY_IMPORTS and name in sys.modules:
            # C's PyImport_Import calls this hook only for its side effect and then reads
            # sys.modules itself: answer None, so no caller ever holds the real module.
            return None
        if level != 0 or name not in self.modules:
            raise ImportError(f"import of {name!r} is not allowed in the sandbox; "
                              f"allowed modules: {', '.join(sorted(self.modules))}")
        return self.modules[name]

    def import_from(self, module: str, name: str) -> Any:
        proxy = self.import_module(module)
        try:
            return self.getattr(proxy, name)
        except AttributeError:
            raise ImportError(f"cannot import name {name!r} from {module!r} in the sandbox") from None

    def build_class(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        """``__metaclass__``: every ``class`` statement; registers the class as sandbox-owned."""
        for base in bases:
            if not isinstance(base, type) or id(base) in self._proxy_type_ids or id(base) in DENIED_IDS:
                raise TypeError(f"cannot subclass {base!r} in the sandbox")
            if type(base) is not type:
                # ABCMeta, EnumType, typing's metaclasses: the class would be built by a
                # metaclass with hooks of its own (register, __prepare__...).
                raise TypeError(f"cannot subclass {base.__name__!r} in the sandbox: its metaclass is "
                                f"{type(base).__name__!r}, and only plain classes may be subclassed")
            if issubclass(base, _ProxyBase):
                raise TypeError(f"cannot subclass {base.__name__!r} in the sandbox")
        for key, value in namespace.items():
            if key in CLASS_DUNDERS and key != "__init__" and not _carries_argument_check(value):
                # A decorator swapped in a function without the check (or a builtin such as
                # list.append): C code would hand it its own objects unchecked.
                raise TypeError(f"{name}.{key} must be a plain function defined in the class body")
        if any(issubclass(base, _HASHABLE_BUILTINS) for base in bases):
            # Unhashable: a str subclass with its own __getitem__/__repr__ hashes like the plain
            # string, so a library cache (re's templates, typing's aliases) would serve later cells
            # what its methods made.
            namespace = {**namespace, "__hash__": None}
        cls = type(name, bases, namespace)
        self.classes.add(cls)
        return cls

    def inplace(self, op: str, x: Any, y: Any) -> Any:
        return _INPLACE[op](x, y)

    # -- builtins --------------------------------------------------------------------

    def builtins(self) -> dict[str, Any]:
        names = (
            "abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict divmod "
            "enumerate filter float format frozenset hash hex id int isinstance issubclass iter len "
            "list map max min next object oct ord pow property range repr reversed round set slice "
            "sorted staticmethod str sum super tuple zip"
        ).split()
        table: dict[str, Any] = {n: getattr(builtins, n) for n in names}
        table.update({n: getattr(builtins, n) for n in dir(builtins)
                      if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException)})
        table.update({
            "True": True, "False": False, "None": None, "Ellipsis": Ellipsis, "NotImplemented": NotImplemented,
            "print": plain_function(self._print, "print"),
            "getattr": plain_function(self.getattr_builtin, "getattr"),
            "hasattr": plain_function(self.hasattr, "hasattr"),
            "setattr": plain_function(self.setattr, "setattr"),
            "delattr": plain_function(self.delattr, "delattr"),
            "type": safe_type, "dir": safe_dir,
            "__import__": self.import_module, "__build_class__": builtins.__build_class__,
        })
        return table

    def globals(self) -> dict[str, Any]:
        """The names RestrictedPython-compiled code expects, plus ``__builtins__``."""
        return {
            "__builtins__": self.builtins(),
            "__name__": "sandbox",
            "__metaclass__": self.build_class,
            "_getattr_": self.getattr,
            "_getitem_": self.getitem,
            "_write_": self.write,
            "_getiter_": iter,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_apply_": lambda f, *a, **k: f(*a, **k),
            "_inplacevar_": self.inplace,
        }


def _fast_getattr(vetted: set[tuple[type, str]], slow: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``_getattr_`` (``obj.name`` for compiled code): a closure, so the hot path reads
    only local and closure variables."""
    _type, _str, _getattr = type, str, getattr

    def getattr_guard(obj: Any, name: str) -> Any:
        # The name must be an exact str before any lookup hashes it: a str subclass
        # with its own __hash__/__eq__ could pose as a vetted name ("upper") and be
        # read raw as another ("__self__"). Hashing type(obj) runs no sandbox code:
        # no metaclass but ``type`` builds the sandbox's classes (see build_class).
        if _type(name) is _str and (_type(obj), name) in vetted:
            return _getattr(obj, name)
        return slow(obj, name)

    return getattr_guard


def _fast_getitem(slow: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``_getitem_`` (``obj[key]`` for compiled code), fast for builtin containers."""
    _type, fast_types = type, _FAST_ITEM_TYPES

    def getitem_guard(obj: Any, key: Any) -> Any:
        if _type(obj) in fast_types:
            return obj[key]
        return slow(obj, key)

    return getitem_guard


def plain_function(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A plain function forwarding to ``method``: sandboxed code never holds a bound method
    (whose ``__self__`` would be the worker's own objects)."""

    def function(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    function.__name__ = function.__qualname__ = name
    return function


_HASHABLE_BUILTINS = (str, bytes, int, float, complex, tuple, frozenset)
_CO_VARARGS = 0x04  # inspect.CO_VARARGS, without importing inspect into every worker


def _carries_argument_check(function: Any) -> bool:
    """Whether a special method is a sandbox function that value-checks its arguments
    (the compiler puts the check first in every such ``def`` that takes arguments)."""
    if type(function) is not types.FunctionType:
        return False
    code = function.__code__
    takes_arguments = code.co_argcount + code.co_kwonlyargcount > 1 or code.co_flags & _CO_VARARGS
    return not takes_arguments or CHECK_ARGS in code.co_names


def safe_type(obj: Any) -> Any:
    """One-argument ``type``. The real one, every metaclass (``type(type(re.I))`` is
    ``EnumType``) and every class a metaclass built (``type(re.I)``: ``Enum`` is in its
    ``mro()``) can build classes outside the class hook; ``type()`` of such an object is
    this function itself."""
    cls = type(obj)
    if is_metaclass(cls) or has_own_metaclass(cls) or issubclass(cls, _ProxyBase) or id(cls) in _TYPING_TYPE_IDS:
        # typing's internal classes (type(typing.List)) and the module proxies' own classes
        # are the worker's machinery, not values.
        return safe_type
    return cls


_MISSING = object()


def _copy_container(value: Any) -> Any:
    """A shallow copy made by the builtin base type, never by a method the value's class defines."""
    for base in MUTABLE_CONTAINERS:
        if isinstance(value, base):
            return base(value) if base is not collections.deque else collections.deque(value, value.maxlen)
    raise TypeError(f"not a container: {type(value).__name__}")


def safe_dir(*obj: Any) -> list[str]:
    """``dir(obj)`` without private names (``dir()`` of the namespace is not offered)."""
    if len(obj) != 1:
        raise TypeError("dir() takes exactly one argument in the sandbox")
    return [n for n in dir(obj[0]) if not n.startswith("_")]


_INPLACE = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "|=": operator.ior, "^=": operator.ixor, "&=": operator.iand,
    "@=": operator.imatmul,
}


class _GuardedFormatter(string.Formatter):
    """``str.format`` whose ``{0.attr[key]}`` lookups go through the sandbox guards."""

    def __init__(self, policy: Policy):
        self._policy = policy

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = self._policy.getattr(obj, key) if is_attr else self._policy.getitem(obj, key)
        return obj, first

    def format_unbound(self, template: str, *args: Any, **kwargs: Any) -> str:
        if not isinstance(template, str):
            raise TypeError("descriptor 'format' requires a 'str' object")
        return self.vformat(template, args, kwargs)

    def format_map_unbound(self, template: str, mapping: Any) -> str:
        if not isinstance(template, str):
            raise TypeError("descriptor 'format_map' requires a 'str' object")
        return self.vformat(template, (), mapping)
