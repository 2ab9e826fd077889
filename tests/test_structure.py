"""Guards for the package structure: no shadowing names, layers import only downward."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "crisscross"
# a layer may import itself and the layers before it, never those after it
# bench/ is the top layer: it may import every layer, and none imports it (only the command line
# at crisscross/cli.py, above every layer, registers its commands)
LAYERS = ["models", "config", "datasets", "trainers", "platform", "bench"]
ONLY_IN = {  # third-party modules allowed only in these layers
    "mlflow": {"platform", "bench"},
    "ray.tune": {"platform"},
    "ray.train": {"trainers", "platform", "bench"},
}
MODELS_THIRD_PARTY = {"torch", "torchvision"}  # models/ is torch only


def imports_of(path: Path, root: Path) -> list[str]:
    """Absolute module names a file under `root` imports, relative imports resolved."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def violations(path: Path, root: Path) -> list[str]:
    """What `path` (a file of the package under `root`) imports against the layering rules."""
    parts = path.relative_to(root / "crisscross").parts
    if len(parts) == 1:
        return []  # crisscross/__init__.py and the __main__ entry point sit above every layer
    layer, allowed = parts[0], set(LAYERS[: LAYERS.index(parts[0]) + 1])
    found = []
    for name in imports_of(path, root):
        top = name.split(".")
        if top[0] == "crisscross" and len(top) > 1 and top[1] in LAYERS and top[1] not in allowed:
            found.append(f"{layer} must not import {name}")
        for prefix, layers in ONLY_IN.items():
            if (name == prefix or name.startswith(prefix + ".")) and layer not in layers:
                found.append(f"{name} may be imported only in {sorted(layers)}")
        third_party = top[0] != "crisscross" and top[0] not in sys.stdlib_module_names
        if layer == "models" and third_party and top[0] not in MODELS_THIRD_PARTY:
            found.append(f"models/ is torch only, imports {name}")
    return found


def test_every_layer_exists():
    layers = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert sorted(layers) == sorted(LAYERS)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_layers_import_only_downward(path):
    assert violations(path, REPO) == []


def test_only_the_command_line_imports_the_benchmarks():
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "bench" not in path.relative_to(PACKAGE).parts[:1]
        and any(n.startswith("crisscross.bench") for n in imports_of(path, REPO))
    }
    assert importers == {"cli.py"}


def test_the_guard_sees_violations(tmp_path):
    probe = tmp_path / "crisscross" / "models" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..platform import cli\nimport mlflow\nfrom ray import tune\n")
    assert set(violations(probe, tmp_path)) == {
        "models must not import crisscross.platform",
        "models must not import crisscross.platform.cli",
        "mlflow may be imported only in ['bench', 'platform']",
        "models/ is torch only, imports mlflow",
        "ray.tune may be imported only in ['platform']",
        "models/ is torch only, imports ray",
        "models/ is torch only, imports ray.tune",
    }


def test_no_top_level_package_shadows_a_well_known_module():
    for name in ("platform", "datasets"):
        assert not (REPO / name).exists() and not (REPO / f"{name}.py").exists()


def test_stdlib_platform_works_from_the_repo_root():
    code = (
        "import platform; platform.system(); import crisscross.platform; print(platform.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert not proc.stdout.strip().startswith(str(REPO))


HEAVY = ("torch", "torchvision", "torchaudio", "ray", "mlflow", "av", "pyarrow", "sklearn")


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["config", "validate", "experiments/pretext/kinetics_sound.yaml"]],
    ids=["help", "config validate"],
)
def test_the_cli_starts_without_the_heavy_libraries(argv):
    """`crisscross --help` and `config validate` import none of torch, Ray, MLflow, PyAV,
    pyarrow, sklearn (the CLI start-up goal of issue 18; `crisscross bench cli` times it)."""
    code = (
        "import sys\n"
        "from crisscross.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    assert exc.code in (0, None)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        # each worker group waits for its FailureLog actor, whose process imports its module
        # (with torch and torchvision, 5 s a worker group on 2 cores)
        ("crisscross.datasets.failures", ("torch", "torchvision", "av", "sklearn")),
        # every training worker imports the monitor; scikit-learn only for a probe (1.6 s)
        ("crisscross.trainers.worker_loop", ("sklearn",)),
    ],
)
def test_processes_that_every_run_starts_import_only_what_they_use(module, absent):
    from crisscross.datasets.failures import FailureLog

    assert FailureLog.__ray_metadata__.modified_class.__module__ == "crisscross.datasets.failures"
    code = (
        f"import sys\nimport {module}\nprint(sorted(m for m in {absent!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_bench_cli_prints_the_three_commands(run_cli):
    result = run_cli("bench", "cli", "--repeats", "1")
    assert result.exit_code == 0, result.output
    for name in ("python -c pass", "crisscross --help", "crisscross config validate"):
        assert f"| {name} |" in result.output


def test_the_shipped_experiments_are_package_data():
    """A non-editable install (the cluster's nodes) finds the specs through the package: they
    live in crisscross/experiments, pyproject ships every one, ./experiments links to them."""
    import fnmatch
    import tomllib

    from crisscross.platform.storage import EXPERIMENTS

    package = REPO / "crisscross"
    assert package / "experiments" == EXPERIMENTS and EXPERIMENTS.is_dir()
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["crisscross"]
    shipped = sorted(EXPERIMENTS.rglob("*.yaml"))
    assert len(shipped) >= 20
    for path in shipped:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel
    assert (REPO / "experiments").resolve() == EXPERIMENTS


def long_functions(path: Path, limit: int) -> list[str]:
    """'file:line name (N lines)' for each function or method in `path` longer than `limit`,
    counted from its `def` line (a click command's option decorators are declarations)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_exceeds_60_lines():
    """Issue 18: a function a reader takes in at once; split one that grows past 60 lines."""
    found = [f for path in sorted(PACKAGE.rglob("*.py")) for f in long_functions(path, 60)]
    assert found == []


def test_the_worker_loop_pieces_stay_under_40_lines():
    """The pretraining loop reads as setup / epoch / end-of-epoch pieces of at most 40 lines."""
    assert long_functions(PACKAGE / "trainers" / "worker_loop.py", 40) == []


def test_the_length_guard_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    probe = tmp_path / "probe.py"
    probe.write_text(f"@decorated\ndef long():\n{body}\n\n\ndef short():\n    pass\n")
    assert long_functions(probe, 60) == ["probe.py:2 long (61 lines)"]
    assert long_functions(probe, 61) == []
