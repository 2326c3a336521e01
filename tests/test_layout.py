"""The package's shape: no import cycle, the engine imports nothing above it, declared dependencies are imported."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import nextchar

SRC = Path(nextchar.__file__).parent
ROOT = SRC.parent.parent
# What the engine may import from the package: the model, vocabulary, configs, files, its own modules.
# runfiles: the checks on what a folder's JSON files hold, read where the engine reads them (torch-free, like files).
ENGINE_MAY_IMPORT = {"nextchar.errors", "nextchar.files", "nextchar.runtime", "nextchar.vocab", "nextchar.config",
                     "nextchar.model", "nextchar.checkpoint", "nextchar.ngram", "nextchar.models", "nextchar.counts",
                     "nextchar.runfiles", "nextchar.text"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in a file, function-local ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub if sub in MODULES else node.module, id(node) in top))
    return out


def package_edges() -> dict[str, set[str]]:
    return {m: {name for name, _ in imports(p) if name in MODULES and name != m} for m, p in MODULES.items()}


def test_no_import_cycle_function_local_imports_included():
    edges, state, stack = package_edges(), {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_engine_imports_nothing_above_it():
    for m, p in MODULES.items():
        if not m.startswith("nextchar.engine"):
            continue
        above = {n for n, _ in imports(p) if n.startswith("nextchar") and not n.startswith("nextchar.engine")
                 and n != "nextchar" and n not in ENGINE_MAY_IMPORT}
        assert not above, f"{m} imports {above}"
        torch_at_top = [n for n, top in imports(p) if n.split(".")[0] == "torch" and top]
        assert not torch_at_top or m == "nextchar.engine.torch_backend", f"{m} imports torch"
    assert not [n for n, _ in imports(MODULES["nextchar.engine.onnx_backend"]) if n.startswith("torch")]


def declared() -> dict[str, set[str]]:
    """Top-level module names of the declared dependencies, per extra ("" = the base install)."""
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs):
        out = set()
        for r in reqs:
            name = r.split(";")[0]
            for sep in "[<>=!~ ":
                name = name.split(sep)[0]
            out.add(name.lower().replace("-", "_"))
        return out

    raw = proj.get("optional-dependencies", {})

    def expand(reqs):  # "nextchar[a,b]" stands for the extras a and b
        out = set()
        for r in reqs:
            if r.startswith("nextchar["):
                out |= set().union(*(expand(raw[x]) for x in r[len("nextchar["):-1].split(",")))
            else:
                out |= names([r])
        return out

    return {"": names(proj["dependencies"]), **{k: expand(v) for k, v in raw.items()}}


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_declared_dependencies_are_the_imported_ones():
    used = {n.split(".")[0] for p in MODULES.values() for n, _ in imports(p)}
    third = used - set(sys.stdlib_module_names) - {"nextchar"}
    deps = declared()
    runtime = set().union(*(v for k, v in deps.items() if k != "dev"))
    assert deps["dev"] | deps[""] >= runtime  # the test suite needs every extra
    assert third == runtime, f"imported but not declared: {third - runtime}; declared, never imported: {runtime - third}"
    assert "torch" not in deps[""] and {"numpy", "onnxruntime", "typer"} <= deps[""]
    assert deps["all"] | deps[""] == runtime


def test_the_cli_imports_no_heavy_module_before_a_command_needs_it():
    code = ("import sys; import nextchar.cli; import nextchar.engine; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'fastapi', 'matplotlib', 'safetensors') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="needs the source tree")
def test_documents_link_only_to_files_inside_the_repository():
    import re

    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT.resolve()), f"{doc.name} links outside the repository: {target}"
            assert path.exists(), f"{doc.name} links to a missing file: {target}"
