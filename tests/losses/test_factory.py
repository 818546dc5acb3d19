"""Factory: every name builds, widths, uniform call signature, errors list the valid choices;
the spec table follows the config's names and sections."""

import dataclasses
import inspect

import pytest
import torch

from loce.config.model import CLS_LOSSES, ModelConfig, RoIConfig
from loce.errors import ConfigError
from loce.losses.factory import (
    LOSS_NAMES,
    build_classification_loss,
    build_classification_loss_for,
    classification_num_logits,
    needs_class_statistics,
)
from loce.losses.registry import LOSS_SPECS
from loce.losses.scoring import scores_from_logits

K = 4
STATS = {
    "eql": {"image_frequency": [0.1, 0.01, 0.001, 0.0001]},
    "federated": {"image_counts": [100, 10, 1, 1]},
    "ecm": {"instance_counts": [500, 50, 5, 1]},
    "gumbel": {"image_frequency": [0.1, 0.01, 0.001, 0.0001]},
}


def test_names():
    assert LOSS_NAMES == (
        "cross_entropy",
        "equilibrium",
        "eql",
        "eqlv2",
        "seesaw",
        "federated",
        "ecm",
        "gumbel",
    )


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if n != "equilibrium"])
def test_every_loss_takes_logits_and_labels(name):
    loss = build_classification_loss(name, K, **STATS.get(name, {}))
    width = classification_num_logits(name, K)
    assert width == (K + 2 if name == "seesaw" else K + 1)
    assert loss.num_logits(K) == width
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, width, generator=g, requires_grad=True)
    value = loss(logits, torch.tensor([0, 1, 2, 3, 4, 0]))
    assert value.shape == () and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(loss.scores(logits.detach()), scores_from_logits(name, logits))


def test_equilibrium_takes_mean_scores():
    loss = build_classification_loss("equilibrium", K, reduction="sum")
    assert classification_num_logits("equilibrium", K) == K + 1
    value = loss(torch.zeros(2, K + 1), torch.tensor([0, 1]), torch.full((K + 1,), 0.2))
    assert value.item() == pytest.approx(2 * torch.log(torch.tensor(5.0)).item(), abs=1e-6)


def test_hyperparameters_reach_the_module():
    loss = build_classification_loss("seesaw", K, p=0.5, q=1.0, loss_weight=2.0)
    assert (loss.p, loss.q, loss.loss_weight) == (0.5, 1.0, 2.0)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match="unknown classification loss 'focal'; valid: "
        "cross_entropy, equilibrium, eql, eqlv2, seesaw, federated, ecm, gumbel",
    ):
        build_classification_loss("focal", K)
    with pytest.raises(ValueError, match="valid: cross_entropy"):
        classification_num_logits("focal", K)


def test_bad_arguments_name_the_accepted_ones():
    with pytest.raises(
        ValueError,
        match=r"'seesaw' does not take 'tempearture'; it accepts: "
        r"p, q, eps, sync_counts, loss_weight",
    ):
        build_classification_loss("seesaw", K, tempearture=20)
    with pytest.raises(ValueError, match=r"'ecm' needs 'instance_counts'"):
        build_classification_loss("ecm", K)


def test_classifier_initialisation_per_method():
    import math

    from loce.losses import eql, eqlv2, federated, gumbel
    from loce.losses.cross_entropy import CrossEntropyLoss

    layer = torch.nn.Linear(8, K + 1)
    before = layer.weight.detach().clone()
    CrossEntropyLoss.init_classifier_(layer.weight, layer.bias)
    assert torch.equal(layer.weight, before)  # the predictor's own init is kept
    for cls, bias in (
        (eql.EQLLoss, -math.log(999)),
        (eqlv2.EQLv2Loss, -math.log(999)),
        (federated.FederatedLoss, -math.log(99)),
        (gumbel.GumbelLoss, -2.0),
    ):
        cls.init_classifier_(layer.weight, layer.bias)
        torch.testing.assert_close(layer.bias, torch.full((K + 1,), bias))
    assert (layer.weight == 0.001).all()  # GOL: constant weights
    assert layer.weight.requires_grad


def test_the_table_has_one_entry_per_config_name_in_order():
    assert tuple(LOSS_SPECS) == CLS_LOSSES == LOSS_NAMES


def test_every_config_section_belongs_to_a_loss():
    sections = {f.name for f in dataclasses.fields(RoIConfig)
                if dataclasses.is_dataclass(f.default_factory)}
    assert sections == {spec.section for spec in LOSS_SPECS.values() if spec.section}


@pytest.mark.parametrize("name", [n for n, spec in LOSS_SPECS.items() if spec.section])
def test_config_section_defaults_are_the_constructor_defaults(name):
    spec = LOSS_SPECS[name]
    params = inspect.signature(spec.cls.__init__).parameters
    section = getattr(RoIConfig(), spec.section)
    for f in dataclasses.fields(section):
        assert f.name in params, f"{spec.section}.{f.name} is no argument of {spec.cls.__name__}"
        default = params[f.name].default
        value = getattr(section, f.name)
        assert type(value) is type(default) and value == default, (spec.section, f.name)


def _class_statistics():
    from loce.models.mask_rcnn import ClassStatistics

    return ClassStatistics(image_counts=(10, 5, 2, 1), instance_counts=(30, 8, 2, 1),
                           num_images=20, source="stats.json")


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value - 1
    return value * 0.5


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_build_for_a_config_takes_its_section_statistic_and_seed(name):
    spec = LOSS_SPECS[name]
    cfg = ModelConfig()
    cfg.roi.cls_loss = name
    cfg.roi.cls_loss_weight = 2.0
    section = getattr(cfg.roi, spec.section) if spec.section else None
    for f in dataclasses.fields(section) if section is not None else ():
        setattr(section, f.name, _changed(getattr(section, f.name)))
    loss = build_classification_loss_for(cfg, K, _class_statistics(), seed=7)
    assert type(loss) is LOSS_SPECS[spec.model_loss or name].cls
    assert loss.loss_weight == 2.0
    for key, value in dataclasses.asdict(section).items() if section is not None else ():
        assert getattr(loss, key) == value, key
    if spec.takes_seed:
        assert loss.draws.seed == 7
    assert needs_class_statistics(name) == (spec.statistic is not None)
    if spec.statistic is not None:
        with pytest.raises(ConfigError, match=rf"cls_loss='{name}' is built from the "):
            build_classification_loss_for(cfg, K)
