"""The package layout: imports point one way (models <- machinery <- data <- eval <- world <- scripts), no module
imports itself through a cycle, and nothing in pacx/ imports timm or a script. Read from the source with `ast`, so
imports inside functions count too."""
import ast
from pathlib import Path

from conftest import ROOT

# Layer of a pacx module: what it may import is its own layer and the ones below it.
LAYERS = ("models", "machinery", "data", "eval", "world")


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "machinery"


def pacx_imports() -> dict[str, set[str]]:
    """module -> the pacx modules it imports (from any line of the file)."""
    graph = {}
    for path in sorted((ROOT / "pacx").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.level == 0, f"{module}: relative import of {node.module}"
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("timm"), f"{module} imports timm (tests only)"
                if name.startswith("pacx."):
                    found.add(name)
        graph[module] = found
    modules = set(graph)
    # "from pacx.data import labs" names the module pacx.data.labs; "from pacx.data.labs import X" the module.
    return {m: {n for n in names if n in modules and n != m} for m, names in graph.items()}


def test_imports_point_one_way():
    wrong = []
    for module, deps in pacx_imports().items():
        for dep in deps:
            if LAYERS.index(layer(dep)) > LAYERS.index(layer(module)):
                wrong.append(f"{module} ({layer(module)}) imports {dep} ({layer(dep)})")
    assert not wrong, wrong


def test_no_import_cycle():
    graph = pacx_imports()
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_layer_folders_hold_the_method_first():
    """The folder a reader opens first holds the method: every model file, and nothing else."""
    models = sorted(p.name for p in (ROOT / "pacx" / "models").glob("*.py"))
    assert models == ["__init__.py", "ecg.py", "heads.py", "labs_dae.py", "lora.py", "losses.py", "mae.py",
                      "pacx_model.py", "pos_embed.py", "vit.py"]
    assert not list(Path(ROOT / "pacx").glob("synthetic*.py"))


def test_method_document_pointers_name_its_sections():
    """Every METHOD.md section a docstring points to (METHOD.md, then the section name in quotes) exists there."""
    import re

    sections = set(re.findall(r"^## (.+)$", (ROOT / "METHOD.md").read_text(), flags=re.M))
    files = list((ROOT / "pacx").rglob("*.py")) + list(ROOT.glob("*.py")) + list((ROOT / "tests").glob("*.py"))
    cited = {m for f in files for m in re.findall(r'METHOD\.md "([^"]+)"', f.read_text())}
    assert cited and cited <= sections, sorted(cited - sections)
    assert not [f for f in files if "DESIGN.md" in f.read_text() and f.name != "test_layout.py"]
