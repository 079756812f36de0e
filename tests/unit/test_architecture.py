"""The code's shape: no import cycle (module- and function-level imports), the layering contracts, file sizes,
thin scripts, and no test that loads a script by its path."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "vae_lab"
MAX_MODULE_LINES = 400
MAX_SCRIPT_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: vae_lab modules it imports}, from every import statement anywhere in the file (functions too)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "vae_lab.loading" in graph["vae_lab.publish"]  # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_entry_points_import_cli():
    outside = {m: deps for m, deps in import_graph().items() if not m.startswith("vae_lab.cli")}
    offenders = {m: sorted(d for d in deps if d.startswith("vae_lab.cli")) for m, deps in outside.items()}
    assert not {m: d for m, d in offenders.items() if d}


def test_modules_and_scripts_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
    fat = {p.name: n for p in (ROOT / "scripts").glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_SCRIPT_LINES}
    assert not fat, f"scripts over {MAX_SCRIPT_LINES} lines: {fat}"


def test_no_test_loads_a_script_by_path():
    pattern = re.compile(r"spec_from_file_location|run_path\(|SourceFileLoader")
    offenders = [p.name for p in TESTS.rglob("test_*.py")
                 if p.name != Path(__file__).name and pattern.search(p.read_text())]
    assert len(list(TESTS.rglob("test_*.py"))) > 40 and not offenders


def test_every_test_file_is_in_a_tier_with_a_name_of_its_own():
    """tests/unit, tests/integration, tests/cli (the marker comes from the folder); pytest imports test modules by
    basename, so two files of one name in two tiers would collide."""
    from tiers import TIERS

    files = list(TESTS.rglob("test_*.py"))
    outside = [str(p.relative_to(TESTS)) for p in files if p.relative_to(TESTS).parts[0] not in TIERS]
    assert not outside, f"test files outside tests/{{{','.join(TIERS)}}}/: {outside}"
    names = [p.name for p in files]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def _starts_a_process(path: Path) -> bool:
    """A call of subprocess.run/Popen/call/check_call/check_output or os.system in the file's code (not in a string
    of code that a test hands to a process: the driver starts that one)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else None
            if (name, node.func.attr) in {("subprocess", f) for f in ("run", "Popen", "call", "check_call",
                                                                       "check_output")} | {("os", "system")}:
                return True
    return False


def test_the_process_check_finds_a_call_and_passes_over_a_string(tmp_path):
    (tmp_path / "a.py").write_text("import subprocess\nsubprocess.run(['ls'])\n")
    (tmp_path / "b.py").write_text("CODE = \"import subprocess; subprocess.run(['ls'])\"\nimport os\nos.getcwd()\n")
    assert _starts_a_process(tmp_path / "a.py") and not _starts_a_process(tmp_path / "b.py")


def test_only_the_cli_tier_starts_processes_and_only_through_the_driver():
    """tests/driver.py is the one way tests start a process; unit tests start none."""
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py") if _starts_a_process(p)]
    assert not offenders, f"start processes through tests/driver.py: {offenders}"
    launches = re.compile(r"driver\.(run|run_many|start|python|execute)\(")
    outside = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py")
               if p.relative_to(TESTS).parts[0] != "cli" and launches.search(p.read_text())]
    assert not outside, f"a test that starts a process belongs in tests/cli: {outside}"


def test_an_artifact_written_before_the_split_still_loads():
    """tests/fixtures/artifact_v0_1: written by vae_lab at commit 6fd9732 (before hub.py was split), a tiny MLP."""
    import torch

    from vae_lab.loading import load_model
    from vae_lab.model import VAE

    fixture = TESTS / "fixtures" / "artifact_v0_1"
    loaded = load_model(fixture)
    assert loaded.cfg.dataset.name == "digits"
    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    # the reconstruction that model gave when it was saved (printed by the writing code)
    expected = torch.tensor([0.5720794200897217, 0.5341782569885254, 0.5739187598228455, 0.4697464406490326])
    torch.testing.assert_close(loaded.model.reconstruct(x).flatten()[:4], expected)
    assert isinstance(VAE.from_pretrained(str(fixture)), VAE)


def _same_cpu_as_pinned() -> bool:
    from pinned import same_cpu_as_pinned

    return same_cpu_as_pinned()


def test_an_artifact_written_before_model_families_loads_as_a_vae_and_reconstructs_exactly():
    """tests/fixtures/artifact_pre_families: a conv VAE with an IAF posterior and a VampPrior written at commit
    ccd28b4 (before config.json recorded `_class_name`); the numbers are what that commit's code computed."""
    import torch

    from vae_lab.loading import load_model
    from vae_lab.model import VAE, ModelFamily

    fixture = TESTS / "fixtures" / "artifact_pre_families"
    loaded = load_model(fixture)
    assert type(loaded.model) is VAE and "_class_name" not in (fixture / "config.json").read_text()
    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    recon = loaded.model.reconstruct(x).flatten()
    expected = torch.tensor([0.20476821064949036, 0.17654326558113098, 0.31816723942756653, 0.5083779096603394,
                             0.4880882203578949, 0.3788931667804718])
    # bit for bit on the CPU model the numbers were written on; another CPU's kernels may round the last float bit
    exact = {"rtol": 0, "atol": 0} if _same_cpu_as_pinned() else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(recon[:6], expected, **exact)
    assert float(recon.sum()) == pytest.approx(20.708110809326172, rel=1e-6)
    torch.manual_seed(0)
    samples = loaded.model.sample(2).flatten()[:4]
    torch.testing.assert_close(samples, torch.tensor([0.13448528945446014, 0.10762999951839447, 0.2679178714752197,
                                                      0.5237598419189453]), **exact)
    assert type(ModelFamily.from_pretrained(str(fixture))) is VAE  # the generic loader finds the family too
