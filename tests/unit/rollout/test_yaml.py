"""Rollout engines are chosen in YAML by ``class_path``, as LightningCLI builds them."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from gradbal.models import TinyPolicy
from gradbal.modules import GRPOModule
from gradbal.rollout import HFGenerate, RolloutEngine

YAML = """
rollout_engine:
  class_path: gradbal.rollout.HFGenerate
  init_args: {share_prefill: false, logprobs: false, sampler: inverse_cdf}
"""


def test_an_engine_is_built_from_its_class_path() -> None:
    parser = ArgumentParser()
    parser.add_argument("--rollout_engine", type=RolloutEngine | None, default=None)
    cfg = parser.parse_string(YAML)
    engine = parser.instantiate_classes(cfg).rollout_engine
    assert isinstance(engine, HFGenerate)
    assert (engine.share_prefill, engine.logprobs) == (False, False)
    assert engine.sampler == "inverse_cdf"
    assert HFGenerate().sampler == "multinomial"  # the default samples as plain generate does


def test_grpo_module_takes_an_engine_from_yaml_and_defaults_to_hf_generate() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(GRPOModule, "model")
    cfg = parser.parse_string(
        "model:\n  policy:\n    class_path: gradbal.models.TinyPolicy\n"
        "    init_args: {hidden_size: 32, num_layers: 1}\n"
        + "\n".join("  " + line for line in YAML.strip().splitlines())
    )
    module = parser.instantiate_classes(cfg).model
    assert isinstance(module.rollout_engine, HFGenerate) and not module.rollout_engine.logprobs
    default = GRPOModule(TinyPolicy(hidden_size=32, num_layers=1))
    assert isinstance(default.rollout_engine, HFGenerate) and default.rollout_engine.logprobs
    assert "rollout_engine" not in default.hparams  # engines are not pickled into checkpoints
