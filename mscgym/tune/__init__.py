"""Ray Tune sweeps over compression tasks (optional: ``pip install 'mscgym[tune]'``).

``run_sweep(task, ...)`` evaluates plans in parallel Ray workers and returns the same
SearchResult as every agent (``create_agent("ray")`` is the same search behind the
Agent interface); ``search_space(task)`` is the Tune search space of a task. Nothing
here imports Ray until a sweep runs or a search space is built.
"""

from mscgym.tune.agent import run_sweep
from mscgym.tune.deps import INSTALL_HINT, check_ray, import_tune
from mscgym.tune.space import config_plan, plan_config, search_space
from mscgym.tune.spec import task_from_spec, task_spec
from mscgym.tune.sweep import SEARCH_ALGS, SweepSettings
from mscgym.tune.trainable import evaluate_trial

__all__ = ["INSTALL_HINT", "SEARCH_ALGS", "SweepSettings", "check_ray", "config_plan",
           "evaluate_trial", "import_tune", "plan_config", "run_sweep", "search_space",
           "task_from_spec", "task_spec"]
