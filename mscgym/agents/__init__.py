"""Search agents: ``create_agent(name, **options).search(task_or_env, budget)``.

Agents: ``grid``, ``random``, ``greedy``, ``optuna`` (TPE, GP, CMA-ES, NSGA-II) and
``rl`` (PPO; needs stable-baselines3). All share one evaluation loop
(:class:`Evaluator`: budget in plans proposed, best with ties to the earlier, tqdm and
TensorBoard logs) and return a :class:`SearchResult` with the best plan's record.
"""

from mscgym.utils.lazy import lazy_exports

# Loaded on first use, so the registry of names (``AGENTS``) imports without torch.
__all__ = lazy_exports(__name__, {
    "mscgym.agents.base": ("Agent", "SearchResult", "resolve_task"),
    "mscgym.agents.evaluator": ("Evaluator", "pareto_front"),
    "mscgym.agents.registry": ("AGENTS", "agent_class", "create_agent"),
})
