"""The house rules that keep the code easy to change: imports run one way with no circle, no module imports an
entry script, every module is one documented concept of at most 350 lines, no function is over 80 lines, and the
command lines answer --help before torch is imported."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_SCRIPTS = {"main", "sweep", "bench", "traverse"}
ROOT_FILES = {"main", "params", "models", "losses", "data", "traverse", "sweep", "bench"}


def modules() -> dict[str, str]:
    """Module name → path, for the root's .py files and the betavae package."""
    found = {name[:-3]: os.path.join(ROOT, name) for name in os.listdir(ROOT) if name.endswith(".py")}
    for folder, _, files in os.walk(os.path.join(ROOT, "betavae")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports_of(path: str, known: set[str]) -> set[str]:
    """The project modules `path` imports, at any depth of the file (late imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    table = modules()
    return {name: imports_of(path, set(table)) - {name} for name, path in table.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None
    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_have_no_cycle():
    assert find_cycle(graph()) is None


def test_no_module_imports_an_entry_script():
    offenders = {name: sorted(targets & ENTRY_SCRIPTS) for name, targets in graph().items() if targets & ENTRY_SCRIPTS}
    assert offenders == {}


def test_the_root_holds_only_what_a_user_runs_or_edits_first():
    assert {name for name in modules() if "." not in name and name != "betavae"} == ROOT_FILES


def test_the_network_file_is_the_network_alone():
    text = open(os.path.join(ROOT, "betavae", "network.py"), encoding="utf-8").read()
    assert len(text.splitlines()) <= 150
    for word in ("mkldnn", "autograd.Function", "fused", "autocast", "torch.ops"):
        assert word not in text


@pytest.mark.parametrize("name", sorted(modules()))
def test_each_module_is_one_documented_concept_of_bounded_size(name):
    path = modules()[name]
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstring = ast.get_docstring(tree)
    assert docstring, f"{name} opens without a docstring"
    assert len(open(path, encoding="utf-8").read().splitlines()) <= 350
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert long == []


@pytest.mark.parametrize("command", [["main.py", "--help"], ["main.py", "--list-params"], ["sweep.py", "--help"],
                                     ["traverse.py", "--help"], ["bench.py", "--help"]])
def test_help_answers_before_torch_is_imported(command):
    probe = ("import runpy, sys; sys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH')")
    result = subprocess.run([sys.executable, "-c", probe, *command], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "NO TORCH"
    assert "usage:" in result.stdout or "--list-params" in command
