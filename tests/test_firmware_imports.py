"""No import cycle among the firmware's modules, lazy imports inside functions included.

A cycle works on CPython and MicroPython only while every module in it imports the
others' names late enough; moving one import makes it fail at start on a board. So the
graph of `pile` modules (every `import pile...` and `from pile... import ...`, at the
top of a module or in a function) must be acyclic.
"""

import ast

from helpers import FIRMWARE

PILE = FIRMWARE / "pile"


def module_name(path):
    parts = path.relative_to(FIRMWARE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PILE.rglob("*.py"))}


def imported(tree):
    """The `pile` modules a module's source imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pile import mqtt` imports the module pile.mqtt; `from pile.x import y`
            # imports pile.x (and pile.x.y when that is a module of a package)
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


def graph():
    return {name: imported(ast.parse(path.read_text())) - {name}
            for name, path in MODULES.items()}


def find_cycle(edges):
    """One cycle of `edges` ({module: modules it imports}) as a list, or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_the_graph_sees_every_kind_of_import():
    edges = graph()
    assert "pile.mqttlink" in edges["pile.firmware"]  # lazy: inside build_link
    assert {"pile.hal.unix", "pile.hal.esp32", "pile.hal.rp2"} <= edges["pile.hal"]  # a package
    assert "pile.framing" in edges["pile.link"] and "pile.connection" in edges["pile.link"]
    assert "pile.mqtt" in edges["pile.mqttlink"]  # `from pile import mqtt`


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    tree = ast.parse("def f():\n    from pile.link import Link\n")
    assert imported(tree) == {"pile.link"}


def test_no_import_cycle_in_the_firmware():
    cycle = find_cycle(graph())
    assert cycle is None, "firmware import cycle: " + " -> ".join(cycle)
