# -*- test-case-name: tests.test_private_access -*-
"""
A lint: Twisted's private names are reached only from
C{twisted_echo/_twisted/}, where each has a behaviour check and a fallback
(issue 20).

It walks the syntax tree of every module of C{twisted_echo/} outside
C{_twisted/} and reports:

 - C{from twisted.x._y import ...}, C{from twisted.x import _y} and
   C{import twisted.x._y} (a private Twisted module or name);
 - an attribute C{._name} (one leading underscore or more, not a dunder)
   read, written or called on
   - a name bound by a C{twisted} import, or an attribute chain starting
     at one (C{tcp.Port._realPortNumber}, C{TLSMemoryBIOProtocol._flush}),
   - an expression named C{transport} or C{reactor} (or ending in
     C{_transport} / C{_reactor}: C{self.transport._tempDataLen},
     C{self.reactor._exitSignal}, C{self._reactor._x});
 - the same names given as a string to C{getattr}, C{setattr},
   C{hasattr} or C{delattr} on those expressions.

It also imports each module outside C{_twisted/} that defines a class and
reports, for every class whose bases include a Twisted class, each private
name of that Twisted class the class overrides (defines in its body) or
uses on C{self} (L{subclass_privates}), except the classes of
L{SUBCLASS_ALLOWED}.

Private state a Twisted class sets only in its methods (not on the class,
e.g. C{TLSMemoryBIOProtocol._tlsConnection}) counts too: the lint reads
the assignments to C{self} in the Twisted class's source
(L{set_in_methods}).

What it does not see, on purpose (a type checker's job, not a lint's):
private names reached through a variable of another name.
docs/operations.md lists the reaches.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parent.parent / "twisted_echo"
#: Classes outside C{_twisted/} (C{"path:Class"}, the path under
#: C{twisted_echo/}) allowed to override or use private names of the Twisted
#: class they subclass, with why. Each is to move to C{_twisted/} (issue 20);
#: none is left (the TLS layer and the metrics channel moved there).
SUBCLASS_ALLOWED: dict[str, str] = {}
#: Names whose private attributes count as Twisted's.
TRANSPORT_OR_REACTOR = ("transport", "reactor")
ACCESSORS = ("getattr", "setattr", "hasattr", "delattr")


def is_private(name: str) -> bool:
    """
    @return: whether C{name} is private (a leading underscore, not a
        dunder).
    """
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_twisted(module: str) -> bool:
    return module == "twisted" or module.startswith("twisted.")


def _names_transport_or_reactor(name: str) -> bool:
    return name in TRANSPORT_OR_REACTOR or name.endswith(
        tuple(f"_{n}" for n in TRANSPORT_OR_REACTOR)
    )


def private_accesses_in(source: str, filename: str = "<source>") -> list[str]:
    """
    @param source: a module's source.
    @return: each reach into a Twisted private name, as C{"FILE:LINE: CODE"}.
    """
    tree = ast.parse(source, filename)
    found: list[tuple[int, int, str]] = []
    twisted_names: set[str] = set()

    def report(node: ast.stmt | ast.expr) -> None:
        found.append((node.lineno, node.col_offset, ast.unparse(node)))

    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and _is_twisted(node.module)
        ):
            twisted_names.update(alias.asname or alias.name for alias in node.names)
            if any(is_private(part) for part in node.module.split(".")) or any(
                is_private(alias.name) for alias in node.names
            ):
                report(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_twisted(alias.name):
                    twisted_names.add((alias.asname or alias.name).split(".")[0])
                    if any(is_private(part) for part in alias.name.split(".")):
                        report(node)

    def watched(expression: ast.expr) -> bool:
        # The chain's last name (transport, reactor) or its root (a name a
        # twisted import bound).
        if isinstance(expression, ast.Attribute) and _names_transport_or_reactor(
            expression.attr
        ):
            return True
        while isinstance(expression, (ast.Attribute, ast.Call, ast.Subscript)):
            expression = (
                expression.func
                if isinstance(expression, ast.Call)
                else expression.value
            )
        return isinstance(expression, ast.Name) and (
            expression.id in twisted_names or _names_transport_or_reactor(expression.id)
        )

    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and is_private(node.attr)
            and watched(node.value)
        ):
            report(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ACCESSORS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
            and watched(node.args[0])
        ):
            report(node)
    return [f"{filename}:{line}: {code}" for line, _, code in sorted(found)]


def private_accesses(package: Path = PACKAGE) -> list[str]:
    """
    @param package: the C{twisted_echo} directory to walk.
    @return: every reach into a Twisted private name outside its
        C{_twisted/} subpackage.
    """
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "_twisted":
            continue
        found += private_accesses_in(path.read_text(encoding="utf-8"), str(relative))
    return found


def _twisted_bases(cls: type) -> list[type]:
    return [
        base
        for base in inspect.getmro(cls)[1:]
        if _is_twisted(getattr(base, "__module__", "") or "")
    ]


_SET_IN_METHODS: dict[type, frozenset[str]] = {}


def set_in_methods(cls: type) -> frozenset[str]:
    """
    @param cls: a Twisted class.
    @return: the private names its own methods set on C{self} (state that
        is not on the class, e.g. C{TLSMemoryBIOProtocol._tlsConnection}).
    """
    if cls not in _SET_IN_METHODS:
        names: set[str] = set()
        try:
            tree = ast.parse(inspect.getsource(cls).lstrip())
        except (OSError, TypeError, SyntaxError, IndentationError):
            tree = None
        for node in ast.walk(tree) if tree is not None else ():
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                for child in ast.walk(target):
                    if (
                        isinstance(child, ast.Attribute)
                        and isinstance(child.value, ast.Name)
                        and child.value.id == "self"
                        and is_private(child.attr)
                    ):
                        names.add(child.attr)
        _SET_IN_METHODS[cls] = frozenset(names)
    return _SET_IN_METHODS[cls]


def subclass_privates(package: Path = PACKAGE) -> list[str]:
    """
    @param package: the C{twisted_echo} directory to walk.
    @return: C{"PATH:Class: NAME"} for each private name of a Twisted class
        that a class outside C{_twisted/} subclassing it defines or uses on
        C{self}, the classes of L{SUBCLASS_ALLOWED} excepted.
    """
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "_twisted":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
        if not any(node.bases for node in classes):
            continue
        parts = relative.with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = importlib.import_module(".".join(("twisted_echo", *parts)))
        for node in classes:
            cls = getattr(module, node.name, None)
            key = f"{relative}:{node.name}"
            if not isinstance(cls, type) or key in SUBCLASS_ALLOWED:
                continue
            bases = _twisted_bases(cls)
            if not bases:
                continue
            names = {name for name in vars(cls) if is_private(name)}
            names.update(
                child.attr
                for child in ast.walk(node)
                if isinstance(child, ast.Attribute)
                and isinstance(child.value, ast.Name)
                and child.value.id == "self"
                and is_private(child.attr)
            )
            for name in sorted(names):
                if any(
                    hasattr(base, name) or name in set_in_methods(base)
                    for base in bases
                ):
                    found.append(f"{key}: {name}")
    return found


class PrivateAccessTests(SynchronousTestCase):
    """
    Twisted's private names are reached only from C{twisted_echo/_twisted/}.
    """

    def test_none_outside_twisted_subpackage(self) -> None:
        """
        No module outside C{_twisted/} imports a private Twisted module or
        name, or reads a private attribute of a Twisted name, a transport
        or a reactor.
        """
        self.assertEqual(private_accesses(), [])

    def test_no_subclass_reaches_outside_twisted_subpackage(self) -> None:
        """
        No class outside C{_twisted/} (but those of L{SUBCLASS_ALLOWED})
        overrides or uses on C{self} a private name of the Twisted class it
        subclasses: the welcome telnet layer's conch hook and the workers'
        adopted UNIX port are in C{_twisted/}.
        """
        self.assertEqual(subclass_privates(), [])

    def test_private_imports_found(self) -> None:
        """
        Private modules and names imported from Twisted are reported;
        public ones and C{__future__} are not.
        """
        source = (
            "from twisted.logger._flatten import KeyFlattener\n"
            "from twisted.protocols import haproxy\n"
            "from twisted.protocols.haproxy import _v1parser\n"
            "import twisted.logger._json\n"
            "from twisted.internet import tcp\n"
        )
        self.assertEqual(
            [line.split(": ", 1)[0] for line in private_accesses_in(source)],
            ["<source>:1", "<source>:3", "<source>:4"],
        )

    def test_private_attributes_found(self) -> None:
        """
        A private attribute on a Twisted name, a transport or a reactor is
        reported, through C{getattr} too; dunders, public names and other
        objects' privates are not.
        """
        source = (
            "from twisted.internet import tcp\n"
            "from twisted.protocols.tls import TLSMemoryBIOProtocol\n"
            "tcp.Port._realPortNumber\n"
            "TLSMemoryBIOProtocol._flushSendBIO(self)\n"
            "self.transport._tempDataLen\n"
            "self.reactor._exitSignal = 1\n"
            "self._reactor._poller\n"
            "getattr(transport, '_tempDataBuffer', None)\n"
            "tcp.Server.__init__\n"
            "self.transport.write\n"
            "self._own_port\n"
            "getattr(publisher, '_observers', None)\n"
        )
        self.assertEqual(
            [line.split(": ", 1)[1] for line in private_accesses_in(source)],
            [
                "tcp.Port._realPortNumber",
                "TLSMemoryBIOProtocol._flushSendBIO",
                "self.transport._tempDataLen",
                "self.reactor._exitSignal",
                "self._reactor._poller",
                "getattr(transport, '_tempDataBuffer', None)",
            ],
        )

    def test_state_set_in_methods_counts(self) -> None:
        """
        Private state a Twisted class sets only in its methods (not on the
        class) is known to the lint: the TLS layer's SSL connection, the
        HTTP channel's network producer.
        """
        from twisted.protocols.tls import TLSMemoryBIOProtocol
        from twisted.web.http import HTTPChannel

        self.assertIn("_tlsConnection", set_in_methods(TLSMemoryBIOProtocol))
        self.assertIn("_appSendBuffer", set_in_methods(TLSMemoryBIOProtocol))
        self.assertIn("_networkProducer", set_in_methods(HTTPChannel))
        self.assertNotIn("transport", set_in_methods(HTTPChannel))
