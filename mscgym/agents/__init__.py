"""Search agents: ``create_agent(name, **options).search(task_or_env, budget)``.

Agents: ``grid``, ``random``, ``greedy``, ``optuna`` (TPE, GP, CMA-ES, NSGA-II) and
``rl`` (PPO; needs stable-baselines3). All share one evaluation loop
(:class:`Evaluator`: budget in plans proposed, best with ties to the earlier, tqdm and
TensorBoard logs) and return a :class:`SearchResult` with the best plan's record.
"""

from mscgym.agents.base import Agent, SearchResult, resolve_task
from mscgym.agents.evaluator import Evaluator, pareto_front
from mscgym.agents.registry import AGENTS, agent_class, create_agent

__all__ = ["AGENTS", "Agent", "Evaluator", "SearchResult", "agent_class", "create_agent",
           "pareto_front", "resolve_task"]
