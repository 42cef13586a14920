"""Search agents on the real digits-cnn quantization task (real calibration, real ORT runs)."""

from __future__ import annotations

import itertools
import os

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mscgym.agents import SearchResult, create_agent, pareto_front
from mscgym.agents.evaluator import dominates
from mscgym.compiler.errors import MSCError
from mscgym.envs.compression_env import CompressionEnv
from mscgym.tasks.task import Task

SMALL_CHOICES = ("float", "int8_tensor_minmax", "int8_channel_minmax")


@pytest.fixture(scope="module")
def task() -> Task:
    return Task("digits-cnn", "quantize", profile_repeat=5)


@pytest.fixture(scope="module")
def small_task() -> Task:
    """3 choices per layer (81 plans), scored on accuracy and size only: deterministic."""
    return Task("digits-cnn", "quantize", profile_repeat=2, profile_warmup=1,
                quant_choices=SMALL_CHOICES, scorer="weighted",
                scorer_options={"weights": {"accuracy": 1.0, "size": 1.0}})


def check_result(task: Task, result: SearchResult, budget: int) -> None:
    """Budget kept, best = best of the history (earliest on ties), record and front agree."""
    history = result.history
    assert len(history) == budget
    assert [h["step"] for h in history] == list(range(budget))
    scores = [h["score"] for h in history]
    assert result.best_score == max(scores)
    assert result.best_plan == history[scores.index(max(scores))]["plan"]
    assert [h["best_score"] for h in history] == list(itertools.accumulate(scores, max))
    assert result.baseline_score == task.score(task.baseline)
    assert result.best_record.plan == result.best_plan
    assert result.best_record.score == pytest.approx(result.best_score)
    assert result.best_record.extra["agent"] == result.agent
    assert result.best_record.extra["budget"] == budget
    assert result.evaluations <= budget + 1
    assert result.cache_stats["hits"] == sum(h["cached"] for h in history)
    assert result.pareto
    for entry in result.pareto:
        assert not any(dominates(h["objectives"], entry["objectives"]) for h in history)
    for h in history:
        assert h["objectives"] == list(task.objectives(task.evaluate(h["plan"])))


def sweep_invariant(result: SearchResult) -> None:
    """Each sweep step varies one dimension of the best plan so far, nothing else."""
    best = None
    for entry in result.history:
        if entry["phase"].startswith("sweep:"):
            dim = entry["phase"][len("sweep:"):]
            others = {k: v for k, v in entry["plan"].items() if k != dim}
            assert others == {k: v for k, v in best["plan"].items() if k != dim}, entry
        if best is None or entry["score"] > best["score"]:
            best = entry


def test_create_agent_checks_name_and_options() -> None:
    with pytest.raises(MSCError, match="unknown agent 'bayes'"):
        create_agent("bayes")
    with pytest.raises(MSCError, match=r"unknown options \['budget'\]"):
        create_agent("grid", budget=3)
    with pytest.raises(MSCError, match="unknown sampler 'anneal'"):
        create_agent("optuna", sampler="anneal")


@pytest.mark.parametrize("name", ["grid", "random", "greedy", "optuna"])
def test_agent_small_budget(task: Task, name: str) -> None:
    result = create_agent(name, seed=0, progress=False).search(task, 8)
    check_result(task, result, 8)
    if name != "random":
        assert result.history[0]["plan"] == task.space.baseline_plan()
        assert result.best_score >= task.score(task.baseline)


def test_agents_accept_an_env(task: Task) -> None:
    env = CompressionEnv(task, mode="oneshot")
    result = create_agent("random", seed=5, progress=False).search(env, 3)
    assert len(result.history) == 3
    with pytest.raises(MSCError, match="Task or a CompressionEnv"):
        create_agent("random").search("digits-cnn", 3)


def test_random_is_seeded_and_never_repeats(task: Task) -> None:
    def plans(seed: int) -> list[dict]:
        agent = create_agent("random", seed=seed, progress=False)
        return [h["plan"] for h in agent.search(task, 6).history]

    first = plans(11)
    assert first == plans(11)
    assert first != plans(12)
    assert len({tuple(p.values()) for p in first}) == 6


def test_random_stops_when_the_space_is_exhausted(small_task: Task) -> None:
    result = create_agent("random", seed=0, progress=False).search(small_task, 100)
    assert len(result.history) == small_task.space.cardinality == 81
    assert len({tuple(h["plan"].values()) for h in result.history}) == 81


def test_grid_full_enumerates_in_product_order(small_task: Task) -> None:
    result = create_agent("grid", mode="full", progress=False).search(small_task, 10)
    expected = [small_task.space.decode(i)
                for i in itertools.islice(itertools.product(range(3), repeat=4), 10)]
    assert [h["plan"] for h in result.history] == expected
    assert result.extra["mode"] == "full"
    auto = create_agent("grid", progress=False).search(small_task, 10)
    assert auto.extra["mode"] == "coarse"


def test_grid_keeps_the_best_choice_of_earlier_layers(small_task: Task) -> None:
    """Regression: the original MSC gym reset earlier layers while searching later ones."""
    result = create_agent("grid", mode="coarse", progress=False).search(small_task, 11)
    check_result(small_task, result, 11)
    dims = [d.name for d in small_task.space]
    assert [h["phase"] for h in result.history] == (
        ["baseline"] + ["uniform"] * 2 + [f"sweep:{d}" for d in dims for _ in range(2)])
    sweep_invariant(result)
    best_uniform = max(result.history[:3], key=lambda h: (h["score"], -h["step"]))
    assert best_uniform["plan"] != small_task.space.baseline_plan()
    for position, dim in enumerate(dims):
        searched = [h for h in result.history if h["phase"] == f"sweep:{dim}"]
        before = [h for h in result.history if h["step"] < searched[0]["step"]]
        best_before = max(before, key=lambda h: (h["score"], -h["step"]))
        for entry in searched:
            for earlier in dims[:position]:
                assert entry["plan"][earlier] == best_before["plan"][earlier]
                assert entry["plan"][earlier] != "float"


def test_greedy_never_worse_than_baseline(task: Task, small_task: Task) -> None:
    result = create_agent("greedy", progress=False).search(task, 10)
    check_result(task, result, 10)
    assert result.history[0]["plan"] == task.space.baseline_plan()
    assert result.best_score >= task.score(task.baseline)
    sweep_invariant(result)
    uniform = create_agent("greedy", start=1, progress=False).search(small_task, 6)
    assert uniform.history[0]["plan"] == small_task.space.baseline_plan()
    assert set(uniform.history[1]["plan"].values()) == {"int8_tensor_minmax"}
    assert uniform.history[1]["phase"] == "start"
    sweep_invariant(uniform)


@pytest.mark.parametrize("sampler, options", [
    ("tpe", {"n_startup_trials": 3}),
    ("gp", {"n_startup_trials": 3}),
    ("cmaes", {}),
    ("nsga2", {"population_size": 4}),
])
def test_optuna_samplers(small_task: Task, sampler: str, options: dict) -> None:
    if sampler == "cmaes":
        pytest.importorskip("cmaes")
    agent = create_agent("optuna", sampler=sampler, sampler_options=options, seed=1,
                         progress=False)
    result = agent.search(small_task, 8)
    check_result(small_task, result, 8)
    assert result.history[0]["plan"] == small_task.space.baseline_plan()
    assert result.extra["sampler"] == sampler
    assert pareto_front(result.history) == result.pareto


def test_optuna_resumes_from_storage(small_task: Task, tmp_path) -> None:
    """A second agent on the same study counts its 4 trials and runs only 3 more."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = create_agent("optuna", storage=storage, study_name="resume", seed=2,
                         progress=False).search(small_task, 4)
    assert len(first.history) == 4
    evaluations = small_task.evaluations
    second = create_agent("optuna", storage=storage, study_name="resume", seed=2,
                          progress=False).search(small_task, 7)
    check_result(small_task, second, 7)
    assert [h["phase"] for h in second.history[:4]] == ["resumed"] * 4
    assert [h["plan"] for h in second.history[:4]] == [h["plan"] for h in first.history]
    assert [h["score"] for h in second.history[:4]] == [h["score"] for h in first.history]
    assert small_task.evaluations - evaluations <= 3
    assert second.extra["resumed_trials"] == 4
    study = optuna.load_study(study_name="resume", storage=storage)
    assert len(study.trials) == 7
    with pytest.raises(MSCError, match="needs 2"):
        create_agent("optuna", sampler="nsga2", storage=storage, study_name="resume",
                     progress=False).search(small_task, 8)


def test_optuna_refuses_a_study_of_another_task(task: Task, small_task: Task, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    create_agent("optuna", storage=storage, study_name="s", progress=False).search(small_task, 1)
    with pytest.raises(MSCError, match="made for another task"):
        create_agent("optuna", storage=storage, study_name="s", progress=False).search(task, 2)


def test_ppo_learns_a_few_hundred_steps(small_task: Task) -> None:
    env = CompressionEnv(small_task, mode="layerwise")
    result = create_agent("rl", seed=0, progress=False).search(env, 50)
    check_result(small_task, result, 50)
    assert result.extra["train_episodes"] == 48
    assert result.extra["timesteps"] == 48 * len(small_task.space)
    assert [h["phase"] for h in result.history] == ["baseline"] + ["train"] * 48 + ["policy"]
    assert result.cache_stats["hits"] > 0
    again = [create_agent("rl", seed=3, progress=False).search(small_task, 9) for _ in range(2)]
    assert [h["plan"] for h in again[0].history] == [h["plan"] for h in again[1].history]


def test_tensorboard_logs(task: Task, tmp_path) -> None:
    logdir = tmp_path / "tb"
    create_agent("random", seed=0, progress=False, logdir=logdir).search(task, 4)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(logdir))
    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("reward", "best_score", "metrics/latency_ms", "cache/hit_rate"):
        assert tag in tags
    assert [e.step for e in events.Scalars("reward")] == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def hurt_task() -> Task:
    """Every compressed plan scores below the baseline (the score rewards a large model)."""
    return Task("digits-cnn", "quantize", profile_repeat=2, profile_warmup=1,
                quant_choices=SMALL_CHOICES, scorer="weighted",
                scorer_options={"weights": {"size": -1.0}})


@pytest.mark.parametrize("name", ["grid", "random", "greedy", "optuna", "rl"])
def test_agents_start_from_the_baseline_and_never_report_worse(hurt_task: Task,
                                                                name: str) -> None:
    result = create_agent(name, seed=4, progress=False).search(hurt_task, 6)
    baseline = hurt_task.space.baseline_plan()
    assert result.history[0]["plan"] == baseline
    assert result.history[0]["phase"] == "baseline"
    assert all(h["score"] < result.baseline_score for h in result.history[1:])
    assert result.best_plan == baseline
    assert result.best_score == result.baseline_score
    assert not result.beat_baseline
    assert "no plan beat the baseline" in result.summary()
    assert result.to_json()["beat_baseline"] is False
    assert result.to_json()["baseline_metrics"] == hurt_task.baseline.to_json()


def test_counters_add_up_on_a_fresh_task() -> None:
    """Real evaluations plus cache hits are the plans: the baseline is a counted step."""
    fresh = Task("digits-mlp", "quantize", profile_repeat=2, profile_warmup=1,
                 quant_choices=SMALL_CHOICES)
    result = create_agent("grid", mode="coarse", progress=False).search(fresh, 7)
    history = result.history
    assert result.evaluations == sum(not h["cached"] for h in history)
    assert result.evaluations + result.cache_stats["hits"] == len(history) == 7
    assert fresh.evaluations == result.evaluations
    assert not history[0]["cached"]


def test_resumed_study_scores_against_the_stored_baseline(tmp_path) -> None:
    """A fresh task (as in a new process) adopts the baseline stored with the study, so
    latency-based scores of old trials and the summary stay what they were."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def fresh() -> Task:
        return Task("digits-mlp", "quantize", profile_repeat=3, profile_warmup=1,
                    quant_choices=SMALL_CHOICES)

    first_task = fresh()
    first = create_agent("optuna", storage=storage, study_name="r", seed=0,
                         progress=False).search(first_task, 3)
    study = optuna.load_study(study_name="r", storage=storage)
    assert study.user_attrs["mscgym_baseline"] == first_task.baseline.to_json()
    second_task = fresh()
    second = create_agent("optuna", storage=storage, study_name="r", seed=0,
                          progress=False).search(second_task, 5)
    assert second_task.baseline.to_json() == first_task.baseline.to_json()
    assert second.baseline_score == first.baseline_score
    assert [h["score"] for h in second.history[:3]] == [h["score"] for h in first.history]
    assert second.history[0]["plan"] == second_task.space.baseline_plan()
    assert second.evaluations <= 2


def test_optuna_params_are_choice_values_users_can_continue(small_task: Task,
                                                            tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    create_agent("optuna", storage=storage, study_name="v", seed=0,
                 progress=False).search(small_task, 5)
    study = optuna.load_study(study_name="v", storage=storage)
    for trial in study.trials:
        assert trial.params == trial.user_attrs["plan"]
        assert set(trial.params.values()) <= set(SMALL_CHOICES)
    assert study.trials[0].params == small_task.space.baseline_plan()

    def objective(trial: optuna.Trial) -> float:
        plan = {d.name: trial.suggest_categorical(d.name, list(d.choices))
                for d in small_task.space}
        return small_task.score(small_task.evaluate(plan))

    study.optimize(objective, n_trials=3)
    assert len(study.trials) == 8
    importances = optuna.importance.get_param_importances(study)
    assert set(importances) == {d.name for d in small_task.space}
    resumed = create_agent("optuna", storage=storage, study_name="v", seed=0,
                           progress=False).search(small_task, 9)
    assert [h["phase"] for h in resumed.history[:8]] == ["resumed"] * 8
    assert [h["plan"] for h in resumed.history[5:8]] == [t.params for t in study.trials[5:8]]
