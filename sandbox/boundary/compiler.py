"""Compile a cell with RestrictedPython, extended for the code LLMs actually write.

On top of RestrictedPython's own checks (no ``_`` names, no exec/eval, guarded
attribute, item, write and iteration operations) this policy:

- allows ``d[k] += v`` and ``o.a += v`` by rewriting them into guarded reads and
  writes through temporaries, so each sub-expression is evaluated once, and
  compiles ``n += v`` natively;
- allows ``x: T = v`` (the annotation is dropped, never evaluated);
- leaves ``print`` a plain builtin so output inside functions is not lost;
- rewrites ``from m import a`` into a guarded helper call, because the
  IMPORT_FROM opcode does a raw ``getattr`` and falls back to ``sys.modules``,
  which reaches real submodules such as ``json.decoder``;
- puts a deadline check at the top of every ``except`` handler and every
  ``finally`` block, so neither ``except BaseException: pass`` nor
  ``finally: break`` / ``continue`` / ``return`` can swallow a timeout, budget or
  output stop;
- value-checks the arguments of a class's special methods, which C code calls
  with its own objects;
- shows the value of a trailing expression, as a REPL does.
"""

from __future__ import annotations

import ast

from RestrictedPython import compile_restricted_exec
from RestrictedPython.transformer import (
    ALLOWED_FUNC_NAMES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

from .outbound import format_problems

# Names the compiled code calls; user code cannot spell them (they start with "_").
CHECK_STOP = "_rlm_check_"
# Read-only special attributes that compile to a guarded lookup, which returns only a str.
READABLE_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__"})
# Compiled to a guarded lookup too; the guard answers it only for super() objects.
GUARDED_DUNDERS = READABLE_DUNDERS | {"__init__"}
IMPORT_FROM = "_rlm_import_from_"
SHOW = "_rlm_show_"
CHECK_ARGS = "_rlm_check_args_"

# Special methods a sandboxed class may define. Nothing here runs at a time the
# sandbox does not control (no __del__) or changes how attributes are looked up.
# No __hash__: a class that defines __eq__ is then unhashable, so its objects never
# sit in a library's cache (typing's, re's, _strptime's), where lookups would hand
# the cache's own keys to the sandbox's __eq__ and let it poison later cells.
CLASS_DUNDERS = ALLOWED_FUNC_NAMES | {
    "__repr__", "__str__", "__len__", "__iter__", "__next__",
    "__getitem__", "__setitem__", "__bool__", "__call__", "__add__", "__sub__",
    "__mul__", "__truediv__", "__floordiv__", "__mod__", "__neg__", "__radd__",
}


def _name(id_: str, ctx: ast.expr_context | None = None) -> ast.Name:
    return ast.Name(id=id_, ctx=ctx or ast.Load())


def _call(func: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_name(func), args=list(args), keywords=[])


class CellPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer with the extensions listed in the module docstring."""

    def check_name(self, node, name, allow_magic_methods=False):
        if allow_magic_methods and name in CLASS_DUNDERS and node.col_offset != 0:
            return
        super().check_name(node, name, allow_magic_methods)

    # print stays an ordinary builtin (the stock collector loses prints in functions).
    def inject_print_collector(self, node, position=0):
        return None

    def visit_Name(self, node: ast.Name):
        if isinstance(node.ctx, ast.Load) and node.id == "print":
            return node
        return super().visit_Name(node)

    def visit_Attribute(self, node: ast.Attribute):
        if node.attr in GUARDED_DUNDERS and isinstance(node.ctx, ast.Load):
            return copy_node(_call("_getattr_", self.visit(node.value), ast.Constant(node.attr)), node)
        return super().visit_Attribute(node)

    def visit_FunctionDef(self, node: ast.FunctionDef):
        """Value-check what C code hands a special method (``__eq__(self, other)``)."""
        node = super().visit_FunctionDef(node)
        # Library internals call these with their own objects (typing compares its
        # special forms with __eq__); what arrives is checked like an attribute read.
        if node.name in CLASS_DUNDERS and node.name != "__init__":
            arguments = node.args
            names = [a.arg for a in [*arguments.posonlyargs, *arguments.args][1:] + arguments.kwonlyargs]
            values: list[ast.expr] = [_name(n) for n in names]
            if arguments.vararg is not None:
                values.append(ast.Starred(value=_name(arguments.vararg.arg), ctx=ast.Load()))
            if values:
                check = copy_node(ast.Expr(value=ast.Call(func=_name(CHECK_ARGS), args=values, keywords=[])),
                                  node.body[0])
                ast.fix_missing_locations(check)
                node.body.insert(0, check)
        return node

    def visit_Module(self, node: ast.Module):
        node = super().visit_Module(node)
        if node.body and isinstance(node.body[-1], ast.Expr):
            last = node.body[-1]
            last.value = _call(SHOW, last.value)
            ast.fix_missing_locations(last)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign):
        if not isinstance(node.target, ast.Name):
            self.error(node, "Annotated assignment is only allowed to plain names.")
            return node
        if node.value is None:
            return copy_node(ast.Pass(), node)
        return self.visit(copy_node(ast.Assign(targets=[node.target], value=node.value), node))

    def visit_AugAssign(self, node: ast.AugAssign):
        if isinstance(node.target, ast.Name):
            # ``n += 1`` runs natively: the policy's in-place hook would only call
            # operator.iadd, and an in-place operator changes no more than the value's
            # own methods (``x.append``) already may.
            return self.node_contents_visit(node)
        op = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        target = node.target
        obj_tmp = self.gen_tmp_name()
        stmts: list[ast.stmt] = [ast.Assign(targets=[_name(obj_tmp, ast.Store())], value=self.visit(target.value))]
        if isinstance(target, ast.Attribute):
            if target.attr.startswith("_"):
                self.error(node, f'"{target.attr}" is an invalid attribute name because it starts with "_".')
                return node
            current = _call("_getattr_", _name(obj_tmp), ast.Constant(target.attr))
            store: ast.expr = ast.Attribute(value=_call("_write_", _name(obj_tmp)), attr=target.attr, ctx=ast.Store())
        else:
            key_tmp = self.gen_tmp_name()
            stmts.append(ast.Assign(targets=[_name(key_tmp, ast.Store())], value=self.visit(target.slice)))
            current = _call("_getitem_", _name(obj_tmp), _name(key_tmp))
            store = ast.Subscript(value=_call("_write_", _name(obj_tmp)), slice=_name(key_tmp), ctx=ast.Store())
        stmts.append(ast.Assign(targets=[store], value=_call("_inplacevar_", op, current, self.visit(node.value))))
        for stmt in stmts:
            copy_locations(stmt, node)
        return stmts

    def visit_ImportFrom(self, node: ast.ImportFrom):
        self.check_import_names(node)
        if node.level:
            self.error(node, "Relative imports are not allowed.")
            return node
        stmts = []
        for alias in node.names:
            target = alias.asname or alias.name
            stmts.append(copy_node(ast.Assign(
                targets=[_name(target, ast.Store())],
                value=_call(IMPORT_FROM, ast.Constant(node.module), ast.Constant(alias.name)),
            ), node))
        return stmts

    def visit_ExceptHandler(self, node: ast.ExceptHandler):
        """Re-raise a pending stop before the handler's body can discard it."""
        node = super().visit_ExceptHandler(node)
        node.body.insert(0, copy_node(ast.Expr(value=_call(CHECK_STOP)), node))
        return node

    def visit_Try(self, node: ast.Try):
        """Re-raise a pending stop before a ``finally`` body can ``break``/``return`` it away."""
        node = super().visit_Try(node)
        if node.finalbody:
            node.finalbody.insert(0, copy_node(ast.Expr(value=_call(CHECK_STOP)), node.finalbody[0]))
        return node


def copy_node(new: ast.AST, old: ast.AST) -> ast.AST:
    copy_locations(new, old)
    return new


def compile_cell(source: str, filename: str):
    """Compile ``source`` under :class:`CellPolicy`; raise ``SyntaxError`` listing every violation."""
    result = compile_restricted_exec(source, filename=filename, policy=CellPolicy)
    if result.errors:
        # Capped: a cell with thousands of violations made a 640 KB error for the next prompt.
        raise SyntaxError(format_problems(result.errors))
    return result.code
