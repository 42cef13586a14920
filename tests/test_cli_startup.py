"""The command line starts without torch, TVM or scikit-learn: ``--help``, each
subcommand's ``--help`` and argument errors are answered from light registries.

Each check runs in a fresh interpreter (``sys.modules`` of this test process already
holds everything) and asserts which modules got imported, not how long it took.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mscgym.cli import COMMANDS

HEAVY = ("torch", "tvm", "sklearn", "onnx", "onnxruntime", "optuna", "matplotlib", "scipy")

_PROBE = """
import contextlib, io, json, sys
from mscgym.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(json.loads(sys.argv[1]))
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                  "heavy": heavy}))
"""


def _probe(argv: list[str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_top_level_help_imports_no_heavy_module() -> None:
    result = _probe(["--help"])
    assert result["code"] == 0
    assert "search" in str(result["stdout"]) and "inspect" in str(result["stdout"])
    assert result["heavy"] == []


@pytest.mark.parametrize("command", [c.NAME for c in COMMANDS])
def test_subcommand_help_ends_with_examples_and_stays_light(command: str) -> None:
    result = _probe([command, "--help"])
    assert result["code"] == 0
    assert result["heavy"] == []
    tail = str(result["stdout"]).rstrip().split("examples:")[-1].strip().splitlines()
    assert 1 <= len(tail) <= 2
    assert all(line.strip().startswith(f"mscgym {command}") for line in tail)


def test_search_choices_come_from_the_registries_without_loading_them() -> None:
    from mscgym.runtime.registry import runner_names
    from mscgym.tasks.kinds import TOOLS
    from mscgym.tasks.scorers import SCORERS

    result = _probe(["search", "--help"])
    text = str(result["stdout"])
    for name in (*TOOLS, *runner_names(), *SCORERS):
        assert name in text
    assert result["heavy"] == []


def test_argument_error_is_a_usage_error_without_heavy_imports() -> None:
    result = _probe(["search", "--task", "nope", "--model", "digits-cnn", "--budget", "1",
                     "--record", "r.json"])
    assert result["code"] == 2
    assert "invalid choice: 'nope'" in str(result["stderr"])
    assert result["heavy"] == []


def test_light_name_lists_agree_with_the_registries_they_stand_for() -> None:
    from mscgym.leaderboard.config import ALL_AGENTS, UNIFORM_AGENT
    from mscgym.leaderboard.entrants import UniformAgent
    from mscgym.zoo import registry
    from mscgym.zoo.names import MODEL_NAMES

    assert tuple(registry._SPECS) == MODEL_NAMES
    assert UniformAgent.name == UNIFORM_AGENT == ALL_AGENTS[0]


def test_lazy_package_exports_resolve_to_the_defining_objects() -> None:
    import importlib

    import mscgym.compiler as compiler
    from mscgym.compiler.graph import MSCGraph

    # Loading the submodule binds it on the package; the export of the same name wins,
    # as it did when the package imported it eagerly.
    importlib.import_module("mscgym.compiler.normalize")
    from mscgym.compiler import normalize

    assert callable(normalize) and normalize.__module__ == "mscgym.compiler.normalize"
    assert compiler.MSCGraph is MSCGraph
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = compiler.nothing
