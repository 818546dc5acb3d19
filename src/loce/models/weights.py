"""Weights into a built model: backbone weights, another detector's weights (torchvision's
COCO models; the class-specific layers start fresh), checkpoints and their key rules.

Every loader checks keys and shapes against the model and fails with one line naming the file
and what does not fit. Module-name prefixes (``train.reinit``, ``train.trainable``) are
matched here too, so that both options give the same hint for a misspelt prefix.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from loce.errors import CheckpointError, ConfigError, LoceError
from loce.fileio import load_torch

__all__ = [
    "CLASS_SPECIFIC_LAYERS",
    "describe_key_mismatch",
    "load_backbone_weights",
    "load_detector_weights",
    "load_initial_weights",
    "load_model_weights",
    "matches_prefix",
    "model_state",
    "module_prefix_choices",
    "non_finite_entries",
    "unknown_prefix_error",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- backbone weights

_TV_WEIGHT = re.compile(r"^\w+_Weights\.\w+$")


def _resolve_weight_name(spec: str, backbone: str) -> str | None:
    """The torchvision weight name meant by ``spec`` or None for a file path."""
    if spec == "imagenet":
        return f"ResNet{backbone.removeprefix('resnet')}_Weights.IMAGENET1K_V1"
    if _TV_WEIGHT.match(spec) and not os.path.exists(spec):
        return spec
    return None


def _fetch_torchvision_weights(name: str, key: str, what: str = "a torchvision ResNet state dict",
                               otherwise: str = "'none'") -> dict[str, Tensor]:
    try:
        weights = torchvision.models.get_weight(name)
    except (KeyError, ValueError, AttributeError):
        raise ConfigError(
            f"{key}: unknown torchvision weight name {name!r}; expected e.g. "
            "'ResNet50_Weights.IMAGENET1K_V1', 'imagenet', 'none' or a file path"
        ) from None
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False)
    except Exception as err:  # noqa: BLE001 - any download failure means the same to the user
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        filename = weights.url.rsplit("/", 1)[-1]
        raise LoceError(
            f"{key}: cannot download {name} from {weights.url} ({reason}); without network "
            f"access set {key}=/path/to/{filename} ({what}) or {otherwise}"
        ) from None


def _read_state_dict(path: Path, key: str, expected: str | None = None,
                     what: str = "a torchvision ResNet's") -> dict[str, Tensor]:
    """The tensors of a state-dict file (unwrapped from ``state_dict``/``model``, without a
    ``module.`` prefix); ``expected`` replaces the list of accepted values in the error for a
    missing file."""
    if not path.is_file():
        expected = expected or ("'none', 'imagenet', a torchvision weight name such as "
                                "ResNet50_Weights.IMAGENET1K_V1, or a ResNet state-dict file")
        raise ConfigError(f"{key}: no such file {str(path)!r}; expected {expected}")
    data = load_torch(path, what=f"{key} file")
    if isinstance(data, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = data.get(wrapper)
            if isinstance(inner, Mapping):
                data = inner
                break
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(
            f"{path}: expected a state dict of tensors ({what}), got {type(data).__name__}"
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in data.items()}


def load_backbone_weights(
    body: nn.Module, spec: str, backbone: str, key: str = "model.backbone_weights"
) -> None:
    """Load ResNet weights into the backbone body.

    Args:
        body: the ResNet part of the backbone (``model.backbone.body``).
        spec: "none", "imagenet", a torchvision weight name, or a file with a torchvision
            ResNet state dict (optionally under "state_dict"/"model", optional "module."
            prefix; classifier ``fc.*`` keys are ignored).
        backbone: "resnet18" ... "resnet101" (for "imagenet" and for error messages).
        key: config key named in error messages.

    Raises:
        ConfigError: unknown weight name or missing file.
        CheckpointError: unreadable file, missing/unexpected keys or shapes that differ.
        LoceError: a torchvision download that failed (one line naming the file option).
    """
    if spec == "none":
        return
    name = _resolve_weight_name(spec, backbone)
    source = name if name is not None else spec
    state = _fetch_torchvision_weights(name, key) if name is not None else _read_state_dict(Path(spec), key)
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    own = body.state_dict()
    _check_layout(
        state, own, set(own),
        lambda keys: f"{source}: not a {backbone} state dict: {keys} keys; check model.backbone "
                     f"or {key}",
        lambda k, got, want: f"{source}: {k} has shape {got} but the {backbone} backbone "
                             f"expects {want}; check model.backbone or {key}",
    )
    body.load_state_dict(state, strict=True)


def _check_layout(state: dict, own: dict, needed: set[str], keys_message, shape_message) -> None:
    """Raise a :class:`CheckpointError` when ``state`` lacks a key of ``needed``, has one
    outside it, or holds a tensor whose shape differs from ``own``'s.

    Args:
        state: the file's tensors by (current) key.
        own: the model's state dict.
        needed: the keys the file must hold.
        keys_message: ``f(description of the key mismatch) -> message``.
        shape_message: ``f(key, file shape, model shape) -> message``.
    """
    missing, unexpected = sorted(needed - set(state)), sorted(set(state) - needed)
    if missing or unexpected:
        raise CheckpointError(keys_message(describe_key_mismatch(missing, unexpected)))
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(shape_message(k, tuple(v.shape), tuple(own[k].shape)))


# ---------------------------------------------------------------------- detector weights

#: Layers whose shape depends on the number of classes: a detector trained on other
#: categories (torchvision's COCO models: 91) gives every tensor but these.
CLASS_SPECIFIC_LAYERS = ("roi_heads.box_predictor", "roi_heads.mask_predictor.mask_fcn_logits")
_MASK_BRANCH = ("roi_heads.mask_head", "roi_heads.mask_predictor")
# Module names of torchvision state dicts written before torchvision 0.13 (its COCO_V1 files):
# the RPN's conv and the mask head's convolutions moved into Conv2dNormActivation blocks.
_LEGACY_KEYS = (
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"),
)
_DETECTOR_FILE = "a torchvision Faster/Mask R-CNN's"


def _current_key(key: str) -> str:
    for pattern, replacement in _LEGACY_KEYS:
        key, n = pattern.subn(replacement, key)
        if n:
            break
    return key


def load_detector_weights(model: nn.Module, spec: str,
                          key: str = "model.detector_weights") -> list[str]:
    """Initialise a detector from another one's weights, for this model's classes.

    Every tensor of ``model`` is loaded from ``spec`` except those of
    :data:`CLASS_SPECIFIC_LAYERS` (box classifier and regressor, the mask predictor's last
    convolution), which keep this model's fresh initialisation for its K classes, and the
    method's state (LOCE's mean scores, the classification loss's buffers). A file with a
    mask branch may initialise a model without one (the branch is left out); BatchNorm's
    ``num_batches_tracked`` is not read.

    Args:
        model: a Faster/Mask R-CNN built by :func:`loce.models.build_mask_rcnn`, whose module
            names are torchvision's.
        spec: a torchvision weight name (``FasterRCNN_ResNet50_FPN_Weights.COCO_V1``,
            ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``; downloaded) or a file holding such a
            state dict (torchvision's module names, current or before 0.13; optionally under
            ``state_dict``/``model``, such as a loce checkpoint of another dataset).
        key: the config key named in error messages.

    Returns:
        The names of the re-initialised tensors of ``model``.

    Raises:
        ConfigError: a missing file or an unknown weight name.
        CheckpointError: an unreadable file, or one that is not this architecture's (keys
            missing or unexpected, a shape that differs; one line naming the file).
        LoceError: a download that failed (one line naming the file to use instead).
    """
    from loce.config.model import detector_weight_name

    name = detector_weight_name(spec)
    if name is not None:
        source = name
        loaded = _fetch_torchvision_weights(name, key, what=f"{_DETECTOR_FILE} state dict",
                                            otherwise="null (ImageNet backbone only)")
    else:
        source = spec
        expected = ("a torchvision weight name such as FasterRCNN_ResNet50_FPN_Weights.COCO_V1, "
                    "or a torchvision Faster/Mask R-CNN state-dict file")
        loaded = _read_state_dict(Path(spec), key, expected, what=_DETECTOR_FILE)
    own = model.state_dict()
    has_mask = any(matches_prefix(k, p) for k in own for p in _MASK_BRANCH)

    def skipped(k: str) -> bool:
        return (k.endswith("num_batches_tracked") or bool(_METHOD_STATE.search(k))
                or any(matches_prefix(k, p) for p in CLASS_SPECIFIC_LAYERS)
                or (not has_mask and any(matches_prefix(k, p) for p in _MASK_BRANCH)))

    state = {_current_key(k): v for k, v in loaded.items()}
    state = {k: v for k, v in state.items() if not skipped(k)}
    needed = {k for k in own if not skipped(k)}
    missing = sorted(needed - set(state))
    if missing and all(any(matches_prefix(k, p) for p in _MASK_BRANCH) for k in missing):
        raise CheckpointError(
            f"{source} has no mask branch (a Faster R-CNN's weights?); use a Mask R-CNN's, "
            "e.g. MaskRCNN_ResNet50_FPN_Weights.COCO_V1, or model.detector=faster_rcnn"
        )
    _check_layout(
        state, own, needed,
        lambda keys: f"{source} is not {_DETECTOR_FILE} state dict of this model's "
                     f"architecture: {keys} keys; check {key} and model.backbone",
        lambda k, got, want: f"{source}: {k} has shape {got} in the file but {want} in the "
                             "model; the model section must build the file's architecture "
                             "(torchvision's COCO detectors: fpn_channels 256, "
                             "roi.representation_size 1024, mask defaults)",
    )
    load_model_weights(model, state, source, strict=False)
    fresh = sorted(k for k in own if any(matches_prefix(k, p) for p in CLASS_SPECIFIC_LAYERS))
    logger.info("%s: %d tensors from %s; fresh for this dataset's classes: %s", key, len(state),
                source, ", ".join(f"{k} {list(own[k].shape)}" for k in fresh))
    if not has_mask and any(matches_prefix(k, p) for k in loaded for p in _MASK_BRANCH):
        logger.info("%s: the file's mask branch is not used (model.detector faster_rcnn)", key)
    return fresh


# ---------------------------------------------------------------------- checkpoints


def non_finite_entries(tensors: Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the floating-point tensors among ``(name, value)`` pairs with a NaN or inf."""
    bad = []
    for name, value in tensors:
        if torch.is_tensor(value) and value.is_floating_point() and value.numel() \
                and not bool(torch.isfinite(value).all()):
            bad.append(name)
    return bad


def describe_key_mismatch(missing: list[str], unexpected: list[str]) -> str:
    """``"2 missing (e.g. a, b); 1 unexpected (e.g. c)"`` for a state-dict error message."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


def model_state(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict inside a checkpoint dict (``model`` or ``state_dict``), or ``data``."""
    for key in ("model", "state_dict"):
        if key in data and isinstance(data[key], Mapping):
            return data[key]
    return data


def load_model_weights(
    model: nn.Module,
    data: Mapping[str, Any],
    source: str,
    *,
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """Load model weights from a checkpoint dict with checked shapes.

    Args:
        model: the (unwrapped) model.
        data: a loce checkpoint (``{"model": ...}``), ``{"state_dict": ...}`` or a state dict.
        source: the file name, for messages.
        strict: require the same set of keys.

    Returns:
        (missing keys, unexpected keys) — both empty when ``strict``.

    Raises:
        CheckpointError: a tensor whose shape differs from the model's (names the layer and
            both shapes — typically another number of classes), or missing/unexpected keys
            when ``strict``.
    """
    state = model_state(data)
    own = model.state_dict()
    bad = non_finite_entries((k, v) for k, v in state.items() if k in own)
    if bad:
        raise CheckpointError(
            f"{source} holds non-finite weights ({len(bad)} tensors with NaN or inf, e.g. "
            f"{', '.join(bad[:3])}): it was written by a diverged run; use an earlier checkpoint"
        )
    for key, value in state.items():
        if key in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{source}: layer {key!r} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model built from the config; check the number "
                "of classes and the model settings, or initialise that layer anew"
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{source} does not fit the model: {describe_key_mismatch(missing, unexpected)} "
            "keys; is it a checkpoint of "
            "this architecture?"
        )
    model.load_state_dict(state, strict=False)
    return missing, unexpected


# ---------------------------------------------------------------------- initial weights and prefixes


# State that belongs to the method, not to the network: a stage-1 checkpoint lacks it and a
# plain model has no place for it (docs/method.md §7: stage 2 starts from the stage-1 weights).
# LOCE's mean scores and the buffers of the classification loss (EQLv2's gradient statistics,
# Seesaw's counts, the constants of EQL/federated/ECM/Gumbel).
_METHOD_STATE = re.compile(r"(^|\.)(score_tracker|cls_loss)\.")
# Buffers of a classification loss that training accumulates. With train.init_from they
# carry over from a checkpoint of the same method (as the originals' load_from does); every
# other loss buffer is a constant of this run's config and annotations and is kept.
_LOSS_STATE = re.compile(r"(^|\.)cls_loss\.")
_RUNNING_LOSS_STATE = re.compile(r"(^|\.)cls_loss\.(pos_grad|neg_grad|pos_neg|cum_samples)$")


def _model_state(data: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict"):
        if key in data and isinstance(data[key], Mapping):
            return data[key]
    return data


def load_initial_weights(model: nn.Module, data: Mapping[str, Any], source: str,
                         reinit: Sequence[str] = ()) -> None:
    """Initialise from another run's checkpoint (e.g. stage 1 for a fine-tune).

    Every key must match, except the method's state (``*.score_tracker.*``, LOCE's mean
    scores, and ``*.cls_loss.*``, the classification loss's buffers): a stage-1 checkpoint
    loads into a LOCE, EQLv2 or Seesaw model (whose state keeps its initial values) and such
    a checkpoint into a plain model (its state is ignored). Between checkpoint and model of
    the same method the running statistics (EQLv2's ``pos_grad``/``neg_grad``/``pos_neg``,
    Seesaw's ``cum_samples``) and LOCE's scores carry over; a loss's constants (EQL's tail
    set, the federated weights, ECM's margins) stay those built from this run's config and
    annotations.

    ``reinit`` (``train.reinit``) lists module-name prefixes that are not loaded: their
    parameters and buffers keep this model's fresh initialisation, and the checkpoint's
    entries under them are ignored whatever their shape.

    Raises:
        ConfigError: a ``reinit`` prefix that names nothing in the model.
        CheckpointError: other missing or unexpected keys, or shapes that differ.
    """
    own = set(model.state_dict())
    prefixes = [p.strip().strip(".") for p in reinit]
    for i, prefix in enumerate(prefixes):
        if not any(matches_prefix(k, prefix) for k in own):
            raise unknown_prefix_error(model, prefix,
                                  f"train.reinit[{i}] = {reinit[i]!r} names nothing in the model.")
    state = {k: v for k, v in model_state(data).items()
             if not (_LOSS_STATE.search(k) and not _RUNNING_LOSS_STATE.search(k))
             and not any(matches_prefix(k, p) for p in prefixes)}
    own = {k for k in own if not any(matches_prefix(k, p) for p in prefixes)}
    missing = sorted(k for k in own - set(state) if not _METHOD_STATE.search(k))
    unexpected = sorted(k for k in set(state) - own if not _METHOD_STATE.search(k))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model: {describe_key_mismatch(missing, unexpected)} "
            "keys; train.init_from must be "
            "a checkpoint of the same architecture (model section) and category set"
        )
    load_model_weights(model, {k: v for k, v in state.items() if k in own}, source, strict=False)


def unknown_prefix_error(model: nn.Module, prefix: str, message: str) -> ConfigError:
    """A ConfigError for a module prefix that names nothing: ``message``, the closest valid
    prefix and the list of valid ones."""
    import difflib

    valid = module_prefix_choices(model)
    close = difflib.get_close_matches(prefix, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{message}{hint} Valid prefixes (or any deeper module name): "
                       f"{', '.join(valid)}")


def matches_prefix(name: str, prefix: str) -> bool:
    """Whether parameter or module ``name`` is ``prefix`` or lies under it."""
    return name == prefix or name.startswith(prefix + ".")


def module_prefix_choices(model: nn.Module) -> list[str]:
    """Module names one or two levels deep that hold parameters (valid ``train.trainable``)."""
    names = {n for n, _ in model.named_parameters()}
    out = []
    for name, _ in model.named_modules():
        if name and name.count(".") <= 1 and any(matches_prefix(n, name) for n in names):
            out.append(name)
    return out
