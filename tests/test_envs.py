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
IMPORT_NAMES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "scipy": "scipy",
                "opencv-python-headless": "cv2", "pandas": "pandas", "matplotlib": "matplotlib",
                "pycocotools": "pycocotools", "tqdm": "tqdm", "pyyaml": "yaml", "jsonschema": "jsonschema"}


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


# Runs in a fresh interpreter: refuses every pinned package outside the env, then imports.
IMPORT_CHECK = """
import importlib, sys
blocked = set(sys.argv[1].split(","))
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in this conda env")
sys.meta_path.insert(0, Refuse())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda path: path.name)
def test_env_holds_what_its_rules_import(env):
    scripts = [paths["script"] for paths in rule_directives().values() if paths.get("conda") == env.resolve()]
    assert scripts, f"no rule uses {env.name}"
    modules = sorted({module for script in scripts for module in imported_modules(script)})
    _, pins = env_pins(env)
    blocked = sorted(module for name, module in IMPORT_NAMES.items() if name not in pins)
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK, ",".join(blocked), *modules], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{env.name} lacks a package its rules import:\n{result.stderr[-3000:]}"
