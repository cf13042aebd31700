"""The rooms of the C++ core (docs/architecture.md) keep their boundaries:
which room's headers each room may include, files of one job (at most about 400
lines, a first comment saying what they are for), and the Python package's
modules free of import cycles. Static checks of the source tree; nothing runs."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "csrc" / "collex"
PACKAGE = ROOT / "python" / "collex"

# What each room may include besides itself. Algorithms see only the transport
# interfaces (transport.h, window.h), never a transport; kernels and common see
# no one above them; fusion sits on the communicator.
MAY_INCLUDE = {
    "common": set(),
    "kernels": {"common"},
    "device": {"common"},
    "transport": {"common", "kernels"},
    "algorithms": {"common", "kernels", "transport-interfaces"},
    "core": {"common", "kernels", "transport", "transport-interfaces", "algorithms"},
    "fusion": {"common", "kernels", "core", "transport-interfaces", "algorithms"},
}
INCLUDE = re.compile(r'^#include "collex/([a-z_]+)/([^"]+)"', re.M)


def room_of(header_room, rest):
    if header_room == "transport" and "/" not in rest:
        return "transport-interfaces"
    return header_room


def test_every_room_includes_only_the_rooms_below_it():
    wrong = []
    for path in CORE.rglob("*"):
        if path.suffix not in (".h", ".cpp", ".cu"):
            continue
        room = path.relative_to(CORE).parts[0]
        for header_room, rest in INCLUDE.findall(path.read_text()):
            included = room_of(header_room, rest)
            if header_room != room and included not in MAY_INCLUDE[room]:
                wrong.append(f"{path.relative_to(ROOT)} includes collex/{header_room}/{rest}")
    assert wrong == []


def test_every_file_is_short_and_says_what_it_is_for():
    wrong = []
    for path in list(CORE.rglob("*")) + list((ROOT / "csrc" / "bindings").glob("*")):
        if path.suffix not in (".h", ".cpp", ".cu"):
            continue
        text = path.read_text()
        lines = text.count("\n")
        if lines > 400:
            wrong.append(f"{path.relative_to(ROOT)}: {lines} lines")
        # A header opens with its comment; a source file with one, or with its own
        # header's include (whose comment it shares).
        own = f'/{path.stem}.h"'
        if not text.startswith("//") and own not in text.split("\n\n", 3)[0] + text[:400]:
            wrong.append(f"{path.relative_to(ROOT)}: no first comment")
    assert wrong == []


def _imports(module_path):
    """The collex modules a module imports, at its top level or inside functions."""
    name = ".".join(module_path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name.removesuffix(".__init__") if module_path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".")
            parent = ".".join(parts[: len(parts) - node.level + 1])
            if node.module:
                found.add(f"{parent}.{node.module}")
            else:
                found.update(f"{parent}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("collex"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("collex"))
    return found


def test_the_python_package_has_no_import_cycle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        modules[name] = path
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # A package's __init__ importing its own modules is how a package is made, not a cycle.
    for m in graph:
        graph[m] = {i for i in graph[m] if not i.startswith(m + ".")}
    state, cycle = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycle.append(" -> ".join(path[path.index(n) :] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycle == []
