"""Chapter 3: node means, the circuit searches and the pruned circuits of the chosen sparse model and others."""

from __future__ import annotations

from circuitbook.circuits import (
    NodeSet,
    cached_mean_activations,
    cached_prune,
    cached_search,
    n_trials_for,
    prune_config,
)
from circuitbook.config import Profile, get_profile
from circuitbook.models.gpt import GPT
from circuitbook.zoo.core import suffix, task_sets, token_streams, tokenizer
from circuitbook.zoo.sparse import THE_SPARSE_MODEL, sparse_name, the_sparse_model

CIRCUIT_TASKS = ("single_double_quote", "bracket_counting", "set_or_string")


def circuit_means(profile: str | Profile, model: GPT, name: str, seed: int = 0, retrain: bool = False):
    """Mean activation of every node of `model` over the pretraining stream (artifact `means_<name>`)."""
    streams = token_streams(profile)
    return cached_mean_activations(f"means_{name}", profile, model, streams["train"], NodeSet.from_model(model),
                                   seed=seed, retrain=retrain)


def circuit_search(profile: str | Profile, task: str, seed: int = 0, retrain: bool = False, progress: bool = True):
    """Chapter 3's circuit for `task` in the chosen sparse model: the best of an Optuna search over the pruning
    hyperparameters (artifact `circuit_search_<task>`). Returns a `circuits.SearchResult`."""
    prof = get_profile(profile)
    model = the_sparse_model(prof, seed)[0].float()
    sets = task_sets(prof, tokenizer(prof), seed)
    means = circuit_means(prof, model, sparse_name(THE_SPARSE_MODEL["kept"], model.cfg.d_model, seed=seed), seed)
    return cached_search(f"circuit_search_{task}{suffix(seed)}", prof, model, sets.train[task], means,
                         prune_config(prof, seed=seed), n_trials_for(prof), NodeSet.from_model(model), seed,
                         retrain, progress)


def pruned_circuit(profile: str | Profile, model: GPT, name: str, task: str, cfg, seed: int = 0,
                   retrain: bool = False, progress: bool = True):
    """`model`'s circuit for `task`, pruned with the given `PruneConfig` (artifact `circuit_<task>_<name>`):
    the dense baseline and the chapter-2 family, pruned with the settings the search chose."""
    prof = get_profile(profile)
    sets = task_sets(prof, tokenizer(prof), seed)
    means = circuit_means(prof, model, name, seed)
    return cached_prune(f"circuit_{task}_{name}", prof, model, sets.train[task], means, cfg,
                        NodeSet.from_model(model), retrain, progress)


