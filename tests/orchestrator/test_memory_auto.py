"""``memory = auto`` end to end without Ray's actors: the searcher a search builds suggests a
trial config, the MLflow callback records the trial's params from it, and the trainable trains
with exactly the memory settings the space chose (precision, checkpointing, chunk size)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch

import trainable.model
import trainable.tune_trainable
from orchestrator.optuna_pruning import PruningOptunaSearch
from orchestrator.settings import SearchSettings
from orchestrator.tracking.callback import MlflowSearchCallback
from tests.helpers import TINY_MODEL
from trainable.tune_trainable import run_trial

CHOSEN = ("precision", "gradient_checkpointing", "chunk_size")
BUDGET_GB = 4.0  # small enough that some trials need checkpointing and chunks
# The trial trains a tiny model (run constants override the space's): the choice was made for
# the paper's model on the budget; what is tested is that it is recorded and trained with.
TINY = {**TINY_MODEL, "warmup_steps": 0}


def point_choosing(bounds, wanted) -> dict:
    """Sampled values of a joint-auto trial whose cheapest fitting settings are ``wanted``:
    the one with the least compute (dialogues x layers), so that it trains fast."""
    found = []
    for (batch, intra, inter), _ in bounds.plans.items():
        for k in range(1, bounds.k_max("auto", batch, intra, inter) + 1):
            plan = bounds.plan(batch, intra, inter, k)
            if wanted(plan["precision"], plan["gradient_checkpointing"], plan["chunk_size"]):
                found.append((batch * (3 * intra + inter), k, batch, intra, inter))
                break
    assert found, "no joint-auto trial in the budget gets the wanted settings"
    _, k, batch, intra, inter = min(found)
    point = {"batch_size": batch, "intra_layers": intra, "inter_layers": inter, "k": k}
    return point | {"lr": 3e-5, "warmup_steps": 0, "dropout": 0.0}


@pytest.fixture(scope="module")
def suggested(tmp_path_factory):
    """The config Ray would hand the first trial of ``orch search --space joint-auto`` on a
    4 GB budget, with that trial chosen to need checkpointing and chunks of < 16 turns (chunks
    shorter than the synthetic dialogues, 6-16 turns, so that they really split). With them,
    bf16 saves nothing fp32 does not (checkpointed layers keep fp32 inputs), so fp32 is
    chosen: bf16's end-to-end run is tests/orchestrator/test_train_memory.py's."""
    root = tmp_path_factory.mktemp("auto")
    settings = SearchSettings(
        space="joint-auto",
        dataset="synthetic",
        gpu_memory_gb=BUDGET_GB,
        epochs=1,
        max_dialogues=8,
        modalities=("text", "audio", "visual"),
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        constants={**TINY, "cache_dir": str(root / "cache")},
    )
    space = settings.build_space()
    bounds = space.space.keywords["memory"]
    point = point_choosing(bounds, lambda p, ckpt, chunk: ckpt and 0 < chunk < 16)
    searcher = PruningOptunaSearch(
        space=space,
        metric="dev_weighted_f1",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        points_to_evaluate=[point],
    )
    return settings, point, searcher.suggest("trial_0")


def test_the_choice_is_in_the_trial_config(suggested):
    _, point, config = suggested
    assert {k: config[k] for k in point} == point
    # The point (batch 3, 6 intra / 4 inter layers, K 9) needs checkpointing and chunks of 4
    # turns; with them fp32 fits as well as bf16 (see the fixture), so the plan keeps fp32.
    assert {k: config[k] for k in ("memory", *CHOSEN, "memory_estimate_gb")} == {
        "memory": "auto",
        "precision": "fp32",
        "gradient_checkpointing": True,
        "chunk_size": 4,
        "memory_estimate_gb": 3.84,
    }
    assert config["memory_estimate_gb"] <= BUDGET_GB


def test_the_choice_reaches_the_trials_mlflow_params(suggested):
    settings, _, config = suggested
    recorder = MlflowSearchCallback("auto", "dev_weighted_f1", "max", settings.tracking_uri)
    recorder.open()
    trial = SimpleNamespace(trial_id="trial_0", config=config, path="/tmp/t0", num_failures=0)
    recorder.on_trial_start(0, [trial], trial)
    params = recorder.client.get_run(recorder.children["trial_0"]).data.params
    recorded = {k: params[k] for k in ("memory", *CHOSEN, "memory_estimate_gb")}
    assert recorded == {
        "memory": "auto",
        "precision": config["precision"],
        "gradient_checkpointing": "True",
        "chunk_size": str(config["chunk_size"]),
        "memory_estimate_gb": str(config["memory_estimate_gb"]),
    }


def test_the_trainable_trains_with_the_choice(suggested, monkeypatch):
    _, _, config = suggested
    seen = {"trainer": None, "steps": [], "encoded": [], "dtypes": set(), "checkpointed": 0}
    prepare = trainable.tune_trainable.prepare

    def recording_prepare(*args, **kwargs):
        trainer = prepare(*args, **kwargs)
        model = trainer.model
        encode, above = model.encode_turns, model.forward_encoded

        def encode_turns(*args):  # (input_ids, attention_mask, token_type_ids, turn_mask, a, b)
            if model.training:
                seen["encoded"].append(args[-2:])
            return encode(*args)

        def forward_encoded(encoded, *args):  # the layers above: once per training step
            if model.training:
                seen["steps"].append(encoded.shape[1])
            return above(encoded, *args)

        model.encode_turns, model.forward_encoded = encode_turns, forward_encoded
        model.discriminator.w_o.register_forward_hook(
            lambda module, args, out: seen["dtypes"].add(out.dtype) if module.training else None
        )
        seen["trainer"] = trainer
        return trainer

    def counting_checkpoint(*args, **kwargs):
        seen["checkpointed"] += 1
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(trainable.tune_trainable, "prepare", recording_prepare)
    monkeypatch.setattr(trainable.model, "checkpoint", counting_checkpoint)
    reports = []
    run_trial(config, lambda metrics, folder: reports.append(metrics))

    assert len(reports) == 1  # one epoch
    model = seen["trainer"].model
    assert {name: getattr(model.config, name) for name in CHOSEN} == {
        name: config[name] for name in CHOSEN
    }
    assert seen["dtypes"] == {trainable.model.DTYPES[config["precision"]]}  # its autocast
    # Every training batch encoded in chunks of chunk_size turns, twice: without a graph, then
    # again per chunk in backward.
    size = config["chunk_size"]
    expected = []
    for turns in seen["steps"]:
        chunks = [(a, min(a + size, turns)) for a in range(0, turns, size)]
        expected += chunks + chunks
    assert seen["encoded"] == expected
    assert any(turns > size for turns in seen["steps"]), "no batch longer than a chunk"
    # Every intra-modal and fusion layer recomputed in backward, once per step (they run on
    # whole dialogues), and the encoder's own checkpointing on.
    layers = len(model.config.modalities) * config["intra_layers"] + config["inter_layers"]
    assert seen["checkpointed"] == len(seen["steps"]) * layers
    assert model.utterance.encoder.is_activation_checkpointing
