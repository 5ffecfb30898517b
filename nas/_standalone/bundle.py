"""Generate a single-file module from this project's real sources (no copied operator code).

``bundle(roots)`` starts from the top-level objects a model needs (the ``NasNet`` builder and
the operator classes a genome names), follows every name their source mentions back to where
it is defined (through ``from X import Y`` chains and function-local imports), and writes the
definitions' source text -- comments and shape notes included -- into one module, ordered so
that whatever a definition needs while it is being defined (base classes, decorators, default
values) comes first. Only ``torch``, ``timm`` and the standard library may remain as imports.

Because the text is read from the live modules at export time, the bundled file and the
package can never drift apart; a self-check (``nas.export``) builds both and compares outputs.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any

from nas.errors import BundleError

PROJECT_PACKAGES = ("operators", "search_space", "evaluators", "nas")
ALLOWED_EXTERNAL = frozenset({"torch", "timm"}) | frozenset(sys.stdlib_module_names)

Key = tuple[str, str]  # (module, top-level name)


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT_PACKAGES


@dataclass
class _Import:
    """A top-level import binding ``name`` in some module."""

    module: str  # absolute module it imports from (or the module itself for ``import a.b``)
    orig: str | None  # the imported attribute (``from m import orig``), None for ``import m``
    alias: str  # the name it binds

    def line(self) -> str:
        if self.orig is None:
            return f"import {self.module}" + (f" as {self.alias}" if self.alias != self.module.split(".")[0] else "")
        return f"from {self.module} import {self.orig}" + (f" as {self.alias}" if self.alias != self.orig else "")


@dataclass
class _Module:
    name: str
    lines: list[str]
    defs: dict[str, ast.stmt] = field(default_factory=dict)
    imports: dict[str, _Import] = field(default_factory=dict)
    globals: frozenset[str] = frozenset()


@dataclass
class _Def:
    key: Key
    text: str
    lineno: int
    eager: set[Key | tuple[str, str, str]] = field(default_factory=set)
    lazy: set[Key | tuple[str, str, str]] = field(default_factory=set)


_PARSED: dict[str, tuple[Any, _Module]] = {}  # module -> (file stamp, parse): parsed once per process


def _stamp(mod: Any) -> Any:
    import os

    path = getattr(mod, "__file__", None)
    try:
        st = os.stat(path)
        return (path, st.st_mtime_ns, st.st_size)
    except (OSError, TypeError):
        return None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    pkg = base if _is_package(module) else base[:-1]
    pkg = pkg[: len(pkg) - node.level + 1]
    return ".".join(pkg + ([node.module] if node.module else []))


def _is_package(module: str) -> bool:
    return hasattr(sys.modules.get(module) or importlib.import_module(module), "__path__")


class Bundler:
    """Collects definitions by following names from a set of root objects."""

    def __init__(self) -> None:
        self._modules: dict[str, _Module] = {}
        self._defs: dict[Key, _Def] = {}
        self._aliases: dict[str, Key] = {}  # bundle name -> definition it aliases
        self._externals: dict[str, _Import] = {}  # bundle name -> import

    # --- parsing -------------------------------------------------------------------------
    def _module(self, name: str) -> _Module:
        if name in self._modules:
            return self._modules[name]
        mod = importlib.import_module(name)
        stamp = _stamp(mod)
        cached = _PARSED.get(name)
        if cached is not None and cached[0] == stamp:
            self._modules[name] = cached[1]
            return cached[1]
        source = inspect.getsource(mod)
        tree = ast.parse(source)
        info = _Module(name, source.splitlines(), globals=frozenset(vars(mod)))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                info.defs[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name):
                            info.defs[n.id] = node
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                info.defs[node.target.id] = node
            elif isinstance(node, ast.Import):
                for a in node.names:
                    bound = a.asname or a.name.split(".")[0]
                    info.imports[bound] = _Import(a.name, None, bound)
            elif isinstance(node, ast.ImportFrom):
                src = _absolute(name, node)
                for a in node.names:
                    info.imports[a.asname or a.name] = _Import(src, a.name, a.asname or a.name)
        self._modules[name] = info
        _PARSED[name] = (stamp, info)
        return info

    # --- resolution ----------------------------------------------------------------------
    def _resolve(self, module: str, name: str, seen: frozenset[Key] = frozenset()) -> Key | _Import | None:
        """Where ``name`` as seen from ``module`` is defined: a project definition, an external
        import, or None (a builtin or a local variable)."""
        if (module, name) in seen:
            raise BundleError(f"import cycle while resolving {module}.{name}")
        info = self._module(module)
        if name in info.defs:
            return (module, name)
        if name in info.imports:
            imp = info.imports[name]
            if not _is_project(imp.module):
                return imp
            if imp.orig is None:
                raise BundleError(f"{module} uses the module object {imp.module!r}; the standalone file "
                                  "needs 'from module import name' imports")
            target = self._resolve(imp.module, imp.orig, seen | {(module, name)})
            if target is None and f"{imp.module}.{imp.orig}" in sys.modules:
                raise BundleError(f"{module} imports the module {imp.module}.{imp.orig}; import names from it instead")
            return target
        if name in info.globals and not hasattr(builtins, name) and name not in ("__name__", "__file__"):
            raise BundleError(f"{module}.{name} is defined in a way the bundler cannot follow "
                              "(not a plain top-level def, class, assignment or import)")
        return None

    def _dep(self, module: str, name: str, lazy_local_imports: dict[str, Key | _Import]) -> Any:
        """A dependency token for ``name`` referenced inside ``module``'s definition."""
        if name in lazy_local_imports:
            target = lazy_local_imports[name]
        else:
            target = self._resolve(module, name)
        if target is None:
            return None
        if isinstance(target, _Import):
            self._add_external(target)
            return None
        if target[1] != name:  # imported under another name: emit ``name = target``
            self._aliases.setdefault(name, target)
            if self._aliases[name] != target:
                raise BundleError(f"two different objects are both called {name!r} in the bundle")
            return ("alias", name, "")
        return target

    def _add_external(self, imp: _Import) -> None:
        top = imp.module.split(".")[0]
        if top == "__future__":
            return
        if top not in ALLOWED_EXTERNAL:
            raise BundleError(f"the standalone file may depend only on torch and timm, but the sources import "
                              f"{imp.module!r}")
        old = self._externals.get(imp.alias)
        if old is not None and (old.module, old.orig) != (imp.module, imp.orig):
            raise BundleError(f"{imp.alias!r} names both {old.line()!r} and {imp.line()!r} in different modules")
        self._externals[imp.alias] = imp

    # --- collection ----------------------------------------------------------------------
    def add(self, obj: Any) -> None:
        """Add a top-level class or function of this project (and everything it needs)."""
        module, name = obj.__module__, obj.__name__
        if getattr(obj, "__qualname__", name) != name:
            raise BundleError(f"{module}.{obj.__qualname__} is not a top-level definition")
        self._collect((module, name))

    def add_key(self, module: str, name: str) -> None:
        target = self._resolve(module, name)
        if not isinstance(target, tuple):
            raise BundleError(f"{module}.{name} is not defined in this project")
        self._collect(target)

    def _collect(self, root: Key) -> None:
        todo = [root]
        while todo:
            key = todo.pop()
            if key in self._defs:
                continue
            d = self._make_def(key)
            self._defs[key] = d
            for dep in d.eager | d.lazy:
                if dep[0] == "alias":
                    todo.append(self._aliases[dep[1]])
                else:
                    todo.append(dep)

    def _make_def(self, key: Key) -> _Def:
        module, name = key
        info = self._module(module)
        node = info.defs[name]
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        while start > 1 and info.lines[start - 2].lstrip().startswith("#"):
            start -= 1  # keep the comment block right above a definition
        end = node.end_lineno
        lines = info.lines[start - 1: end]

        # Function-local imports of project names become bundle-level names: drop those lines.
        local: dict[str, Key | _Import] = {}
        drop: set[int] = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub is not node:
                src = _absolute(module, sub)
                if _is_project(src):
                    for a in sub.names:
                        local[a.asname or a.name] = self._resolve(src, a.name) or _Import(src, a.name, a.name)
                    drop.update(range(sub.lineno, sub.end_lineno + 1))
            elif isinstance(sub, ast.Import) and sub is not node:
                if any(_is_project(a.name) for a in sub.names):
                    raise BundleError(f"{module}.{name} imports a project module inside a function; "
                                      "use 'from module import name'")
        text = "\n".join(line for i, line in enumerate(lines, start) if i not in drop)
        if drop:
            self._check_bodies(node, drop)

        eager_nodes, lazy_nodes = _split(node)
        d = _Def(key, text, start)
        for bucket, nodes in ((d.eager, eager_nodes), (d.lazy, lazy_nodes)):
            for n in _names(nodes):
                if n == name and bucket is d.lazy:
                    continue
                dep = self._dep(module, n, local)
                if dep is not None and dep != key:
                    bucket.add(dep)
        return d

    @staticmethod
    def _check_bodies(node: ast.AST, drop: set[int]) -> None:
        for sub in ast.walk(node):
            body = getattr(sub, "body", None)
            if isinstance(body, list) and body and all(
                    isinstance(s, (ast.Import, ast.ImportFrom)) and s.lineno in drop for s in body):
                raise BundleError("a block consists only of project imports; the bundler cannot drop them")

    def require(self, module: str, attr: str | None) -> None:
        """Make the bundle import ``module`` (or ``attr`` from it) for code added after it."""
        self._add_external(_Import(module, attr, attr or module.split(".")[0]))

    def source_modules(self) -> set[str]:
        """The project modules definitions were taken from."""
        return {m for m, _ in self._defs}

    # --- output --------------------------------------------------------------------------
    def render(self) -> tuple[str, str]:
        """``(imports, definitions)`` source text, definitions ordered so eager needs come first."""
        names: dict[str, Key] = {}
        for key in self._defs:
            if key[1] in names and names[key[1]] != key:
                raise BundleError(f"{key[1]!r} is defined in both {names[key[1]][0]} and {key[0]}; "
                                  "the standalone file needs distinct top-level names")
            if key[1] in self._externals:
                raise BundleError(f"{key[1]!r} is both defined in {key[0]} and imported from "
                                  f"{self._externals[key[1]].module}")
            names[key[1]] = key

        nodes: dict[Any, tuple[Any, str, set]] = {}
        for key, d in self._defs.items():
            nodes[key] = ((_module_rank(key[0]), key[0], d.lineno), d.text, d.eager)
        for alias, target in self._aliases.items():
            nodes[("alias", alias, "")] = ((_module_rank(target[0]), target[0], self._defs[target].lineno + 0.5),
                                           f"{alias} = {target[1]}", {target})
        order = _toposort(nodes)
        body = "\n\n\n".join(nodes[k][1] for k in order)

        plain = sorted(i.line() for i in self._externals.values() if i.orig is None)
        froms: dict[str, list[str]] = {}
        for i in self._externals.values():
            if i.orig is not None and i.module != "__future__":
                froms.setdefault(i.module, []).append(i.orig if i.alias == i.orig else f"{i.orig} as {i.alias}")
        std = [ln for ln in plain if ln.split()[1].split(".")[0] in sys.stdlib_module_names]
        std += [f"from {m} import {', '.join(sorted(set(v)))}" for m, v in sorted(froms.items())
                if m.split(".")[0] in sys.stdlib_module_names]
        third = [ln for ln in plain if ln not in std]
        third += [f"from {m} import {', '.join(sorted(set(v)))}" for m, v in sorted(froms.items())
                  if m.split(".")[0] not in sys.stdlib_module_names]
        def by_module(line: str) -> tuple[str, int]:
            return line.split()[1], 0 if line.startswith("import ") else 1

        imports = ("from __future__ import annotations\n\n" + "\n".join(sorted(std, key=by_module)) + "\n\n"
                   + "\n".join(sorted(third, key=by_module)))
        return imports, body


def _module_rank(module: str) -> int:
    order = ("operators.registry", "operators.base")
    if module in order:
        return order.index(module)
    if module.startswith("operators."):
        return 2
    if module == "search_space.genome":
        return 3
    if module == "search_space.builder":
        return 9
    return 5


def _toposort(nodes: dict[Any, tuple[Any, str, set]]) -> list[Any]:
    """Kahn's algorithm on eager edges; ties broken by (module rank, module, line)."""
    import heapq

    indeg = {k: 0 for k in nodes}
    users: dict[Any, list[Any]] = {k: [] for k in nodes}
    for k, (_, _, eager) in nodes.items():
        for dep in eager:
            dep = dep if dep in nodes else None
            if dep is not None:
                indeg[k] += 1
                users[dep].append(k)
    heap = [(nodes[k][0], i, k) for i, k in enumerate(nodes) if indeg[k] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, _, k = heapq.heappop(heap)
        out.append(k)
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, (nodes[u][0], len(out) + len(heap), u))
    if len(out) != len(nodes):
        stuck = sorted(str(k[1]) for k in nodes if k not in out)
        raise BundleError(f"definitions need each other while being defined: {', '.join(stuck)}")
    return out


def _names(nodes: list[ast.AST]) -> list[str]:
    seen: dict[str, None] = {}
    for n in nodes:
        for sub in ast.walk(n):
            if isinstance(sub, ast.Name):
                seen.setdefault(sub.id)
    return list(seen)


def _split(node: ast.stmt) -> tuple[list[ast.AST], list[ast.AST]]:
    """The parts of a top-level definition evaluated while it is defined, and the rest."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _function_parts(node)
    if isinstance(node, ast.ClassDef):
        eager: list[ast.AST] = [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
        lazy: list[ast.AST] = []
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                e, lz = _function_parts(stmt)
                eager += e
                lazy += lz
            elif isinstance(stmt, ast.AnnAssign):
                lazy.append(stmt.annotation)
                if stmt.value is not None:
                    eager.append(stmt.value)
            else:
                eager.append(stmt)
        return eager, lazy
    if isinstance(node, ast.AnnAssign):
        return ([node.value] if node.value is not None else []), [node.annotation]
    return [node], []


def _function_parts(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[ast.AST], list[ast.AST]]:
    a = node.args
    eager = [*node.decorator_list, *a.defaults, *(d for d in a.kw_defaults if d is not None)]
    lazy: list[ast.AST] = [*node.body]
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
        if arg is not None and arg.annotation is not None:
            lazy.append(arg.annotation)
    if node.returns is not None:
        lazy.append(node.returns)
    return eager, lazy
