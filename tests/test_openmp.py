"""micml.openmp: jobs that own their cores spin briefly, set before torch loads."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from micml.openmp import SPIN_COUNT, own_cores

ROOT = Path(__file__).resolve().parents[1]
# Snakemake jobs with `threads:` that run torch on them.
CORE_OWNING_SCRIPTS = ("train.py", "test.py")


def run_python(code: str, **environ) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **environ},
                          timeout=300)


def test_own_cores_sets_spin_count_and_threads_of_a_fresh_process():
    result = run_python("from micml.openmp import own_cores; own_cores(1)\n"
                        "import os, torch\n"
                        "print(torch.get_num_threads(), os.environ['GOMP_SPINCOUNT'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", str(SPIN_COUNT)]


def test_a_spin_count_set_by_the_user_is_kept(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a fresh job, before torch loads
    environ = {"GOMP_SPINCOUNT": "0"}
    own_cores(3, environ=environ)
    assert environ == {"GOMP_SPINCOUNT": "0", "OMP_NUM_THREADS": "3"}
    result = run_python("from micml.openmp import own_cores; own_cores(2)\n"
                        "import os; print(os.environ['GOMP_SPINCOUNT'], os.environ['OMP_NUM_THREADS'])",
                        GOMP_SPINCOUNT="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "2"]


def test_calling_it_after_torch_loaded_is_an_error_not_a_silent_no_op():
    result = run_python("import torch\nfrom micml.openmp import own_cores\nown_cores(2)")
    assert result.returncode != 0
    assert "before torch is imported" in result.stderr


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_refused(threads, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # the check runs before torch is imported
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        own_cores(threads, environ={})


@pytest.mark.parametrize("script", CORE_OWNING_SCRIPTS)
def test_core_owning_job_scripts_call_own_cores_before_anything_else(script):
    tree = ast.parse((ROOT / "workflow" / "scripts" / script).read_text())
    first_import, first_call = tree.body[0], tree.body[1]
    assert isinstance(first_import, ast.ImportFrom) and first_import.module == "micml.openmp"
    assert isinstance(first_call, ast.Expr) and ast.unparse(first_call.value) == "own_cores(snakemake.threads)"


@pytest.mark.parametrize("script", CORE_OWNING_SCRIPTS)
def test_core_owning_rules_declare_their_threads(script):
    rules = "\n".join(path.read_text() for path in (ROOT / "rules").glob("*.smk"))
    rule = rules[:rules.index(f'workflow/scripts/{script}"')]
    rule = rule[rule.rindex("\nrule "):]
    assert "\n    threads:" in rule, f"the rule running {script} must declare threads (own_cores takes them)"
