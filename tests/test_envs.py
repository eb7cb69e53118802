"""The conda envs of `--sdm conda` runs: pinned like requirements.txt, named by every rule,
and holding what their rules import. (No conda here: the envs are checked, not built.)"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
ENVS = REPO / "envs"
RULE_FILES = sorted((REPO / "rules").glob("*.smk"))
# pip distribution -> the module it installs, for the packages the rule scripts may import
IMPORT_NAMES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "scipy": "scipy", "numba": "numba",
                "opencv-python-headless": "cv2", "pandas": "pandas", "matplotlib": "matplotlib",
                "pycocotools": "pycocotools", "tqdm": "tqdm", "pyyaml": "yaml", "jsonschema": "jsonschema",
                "safetensors": "safetensors", "av": "av", "trackeval": "trackeval"}
# Pinned packages that no rule script imports: the workflow engine and its plugins, and test tools.
# opencv-python only holds trackeval's dependency at the build of opencv-python-headless (both are cv2).
NOT_FOR_RULES = {"snakemake", "snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep",
                 "pytest", "hypothesis", "timm", "snakefmt", "opencv-python"}


def requirement_pins() -> dict[str, str]:
    """{name: version} of requirements.txt, every line an exact `name==version`."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"requirements.txt: {line!r} is not an exact pin"
            pins[requirement.name.lower()] = spec.version
    return pins


def env_pins(path: Path) -> tuple[str, dict[str, str]]:
    """(python version, {pip name: version}) of one env file."""
    document = yaml.safe_load(path.read_text())
    python = next(dep.split("=", 1)[1] for dep in document["dependencies"]
                  if isinstance(dep, str) and dep.startswith("python="))
    pip = next(dep["pip"] for dep in document["dependencies"] if isinstance(dep, dict))
    pins = {}
    for line in pip:
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {line!r} is not an exact pin"
        pins[requirement.name.lower()] = spec.version
    return python, pins


def rule_directives() -> dict[str, dict[str, Path]]:
    """{rule: {'conda': env path, 'script': script path}} as written in rules/*.smk, resolved
    against the folder of the .smk file the way Snakemake resolves them."""
    rules = {}
    for smk in RULE_FILES:
        for block in re.split(r"^rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            name = block.split(":", 1)[0].strip()
            found = dict(re.findall(r"^    (conda|script):\s*\n\s+\"([^\"]+)\"", block, flags=re.MULTILINE))
            rules[name] = {key: (smk.parent / value).resolve() for key, value in found.items()}
    return rules


ENV_FILES = sorted(ENVS.glob("*.yaml"))


def test_there_is_one_env_per_rule_family():
    assert {path.stem for path in ENV_FILES} == {"data", "torch", "evaluate"}


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda path: path.name)
def test_env_pins_equal_requirements(env):
    python, pins = env_pins(env)
    required = requirement_pins()
    for name, version in pins.items():
        assert name in required, f"{env.name}: {name} is not pinned in requirements.txt"
        assert version == required[name], f"{env.name}: {name}=={version}, requirements.txt has {required[name]}"
    # the interpreter the test suite runs on is the one the envs are checked against
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}", f"{env.name}: python={python}"


def test_requirement_pins_lie_in_the_package_ranges_and_extras_are_pinned():
    """pyproject's ranges (what `pip install micml[...]` accepts) hold the pinned versions, and
    every package of an extra, the SLURM plugin included, is pinned for CI and the envs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = requirement_pins()
    ranges = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    for line in ranges:
        requirement = Requirement(line)
        name = requirement.name.lower()
        assert name in pins, f"pyproject.toml names {name}, which requirements.txt does not pin"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {line!r}"


def test_every_rule_names_an_existing_env_and_script():
    rules = rule_directives()
    assert {"synthesize", "convert", "train", "test", "evaluate", "paper_tables"} <= set(rules)
    for rule, paths in rules.items():
        assert "conda" in paths and "script" in paths, f"rule {rule}: needs conda: and script:"
        assert paths["conda"].parent == ENVS.resolve() and paths["conda"].is_file(), f"rule {rule}: {paths['conda']}"
        assert paths["script"].is_file(), f"rule {rule}: {paths['script']}"


def imported_modules(script: Path) -> list[str]:
    tree = ast.parse(script.read_text())
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return sorted(set(modules))


def micml_file(module: str) -> Path | None:
    """The source file of a module of this checkout's micml package (None for a name in one)."""
    path = REPO.joinpath(*module.split("."))
    return next((file for file in (path.with_suffix(".py"), path / "__init__.py") if file.is_file()), None)


def imports_in(file: Path, module: str) -> set[str]:
    """Every module `file` imports anywhere: at the top and late, inside functions (relative
    imports resolved; `from a import b` gives a and a.b, which may be a module)."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def reachable_modules(scripts: list[Path]) -> list[str]:
    """What the scripts may import when they run: their imports, every micml module reachable
    through imports at any depth (late imports in functions included, e.g. a table that imports
    micml.models only when it is written), and the top-level package of everything those import."""
    modules = {module for script in scripts for module in imported_modules(script)}
    todo, seen = [module for module in modules if module.split(".")[0] == "micml"], set()
    while todo:
        module = todo.pop()
        file = micml_file(module)
        if module in seen or file is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for name in imports_in(file, module):
            if name.split(".")[0] == "micml":
                todo.append(name)
            else:
                modules.add(name.split(".")[0])
    return sorted(modules | seen)


# The start of a fresh interpreter that refuses the packages named in argv[1] (those outside the env).
REFUSE_OUTSIDE_ENV = """
import importlib, sys
blocked = set(sys.argv[1].split(","))
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in this conda env")
sys.meta_path.insert(0, Refuse())
"""

# Refuses every pinned package outside the env, then imports.
IMPORT_CHECK = REFUSE_OUTSIDE_ENV + """
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def test_every_pinned_package_is_known_to_the_import_check():
    """A package pinned but missing from IMPORT_NAMES would never be refused below, so a rule
    importing it outside its env would pass unseen."""
    unknown = set(requirement_pins()) - set(IMPORT_NAMES) - NOT_FOR_RULES
    assert not unknown, f"add {sorted(unknown)} to IMPORT_NAMES (pip name -> module) or NOT_FOR_RULES"


@pytest.mark.parametrize("rule", sorted(rule_directives()))
def test_rule_script_imports_only_what_its_env_holds(rule):
    paths = rule_directives()[rule]
    modules = reachable_modules([paths["script"]])
    _, pins = env_pins(paths["conda"])
    blocked = sorted(module for name, module in IMPORT_NAMES.items() if name not in pins)
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK, ",".join(blocked), *modules], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"rule {rule}: {paths['conda'].name} lacks a package "
                                    f"{paths['script'].name} imports:\n{result.stderr[-3000:]}")


def test_every_env_is_used():
    used = {paths["conda"] for paths in rule_directives().values()}
    assert {env.resolve() for env in ENV_FILES} <= used


# Runs the evaluate env's rules on a two-video dataset in a fresh interpreter that refuses the
# packages the env lacks: import checks miss what a function imports late, when it runs.
EVALUATE_RUN = REFUSE_OUTSIDE_ENV + """
from pathlib import Path
import numpy as np
import pandas as pd
from micml import layout
from micml.data.unified import UnifiedWriter
from micml.detections import frame_mat_path, write_frame_mat
from micml.evaluation.paper import write_paper_tables
from micml.evaluation.evaluate import evaluate_predictions

root = Path(sys.argv[2])
writer = UnifiedWriter(root / "data" / "toy", protocols=("dsfnet_f1", "coco_ap50", "centre_distance"))
grey = [np.full((48, 64, 3), 128, np.uint8)] * 2
writer.add_video("v1", "test", grey, {1: [[10, 10, 20, 20]], 2: [[30, 30, 40, 40]]})
dataset = writer.commit()
predictions = layout.predictions_dir(root / "results", "toy", "dsfnet", 0, "test")
write_frame_mat(frame_mat_path(predictions / "mat", "v1", 1), [[10, 10, 20, 20, 0.9]])
write_frame_mat(frame_mat_path(predictions / "mat", "v1", 2), [])
evaluate_predictions(dataset, predictions, "test", layout.metrics_dir(root / "results", "toy", "dsfnet", 0))
(root / "results" / "tables").mkdir()
pd.DataFrame({"variant": ["dsfnet"], "params_inference": [1], "params_total": [1], "gmac_512": [1.0],
              "gflops_512": [2.0]}).to_csv(root / "results" / "tables" / "models.csv", index=False)
tables = write_paper_tables(root / "results", ["toy"], ["dsfnet"], root / "results" / "tables", seeds=[0])
ablation = tables["paper_ablation"].set_index("model")
assert ablation.loc["dsfnet", "description"], ablation
print("imported:", sorted(name for name in sys.modules if name.split(".")[0] in blocked))
"""


def test_evaluate_env_runs_evaluate_and_paper_tables(tmp_path):
    """rules evaluate and paper_tables (envs/evaluate.yaml, no torch) on a tiny results tree, every
    table written, the ablation table with its variant descriptions."""
    env = ENVS / "evaluate.yaml"
    rules = rule_directives()
    assert rules["evaluate"]["conda"] == rules["paper_tables"]["conda"] == env.resolve()
    _, pins = env_pins(env)
    blocked = sorted(module for name, module in IMPORT_NAMES.items() if name not in pins)
    assert "torch" in blocked
    result = subprocess.run([sys.executable, "-c", EVALUATE_RUN, ",".join(blocked), str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{env.name} cannot run its rules:\n{result.stderr[-3000:]}"
    assert "imported: []" in result.stdout
