"""Convert MMDetection 2.x Mask R-CNN checkpoints to loce checkpoints and back.

An MMDetection checkpoint is ``{"meta": {"config": <merged config text>, "CLASSES": [...],
"mmdet_version": ..., ...}, "state_dict": ..., "optimizer": ...}`` (or a bare state dict).
:func:`mmdet_to_loce` reads it with ``torch.load(weights_only=True)``, reads the model from
``meta["config"]`` (:mod:`loce.convert.mmdet_spec`; the text is parsed, never executed), maps
the weights (:mod:`loce.models.mmdet_weights`), builds the loce config by loading the matching
*bundled* LVIS config by name and applying only what the MMDetection config says (classes,
depth, heads, test settings, data), checks that the weights load strictly into the model that
config builds, and writes a checkpoint in ``loce train``'s format: ``model``, ``config``,
``num_classes``, ``category_ids``, ``category_names`` (plus ``converted_from``, the source's
metadata). ``loce predict``, ``loce eval`` workflows, :class:`loce.Detector` and
``train.init_from`` take it as it is.

:func:`loce_to_mmdet` writes the inverse: MMDetection's state dict with ``meta["CLASSES"]``
and a config text (the source's own when the checkpoint was converted from MMDetection, else
one written from the loce config). MMDetection → loce → MMDetection is bit-exact.

Method state that MMDetection does not save (LOCE's mean scores, see docs/parity.md §2)
gets the values a fresh model starts with; Seesaw's sampled-RoI counts
(``loss_cls.cum_samples``, background last in MMDetection) are carried over both ways.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from loce.convert.categories import CategoryTable, resolve_categories
from loce.convert.mmcv_config import Unparsed, load_config_file, parse_config_text
from loce.convert.mmdet_spec import MMDetModelSpec, read_model_spec
from loce.errors import CheckpointError, ConfigError
from loce.fileio import load_torch

if TYPE_CHECKING:
    from loce.models.mmdet_weights import MMDetWeightsInfo

__all__ = ["ConversionResult", "loce_config_name", "loce_to_mmdet", "mmdet_config_text",
           "mmdet_to_loce", "read_checkpoint"]

Log = Callable[[str], None]
NormedMask = Literal["auto", "yes", "no"]

_SEESAW_COUNTS_MMDET = "roi_head.bbox_head.loss_cls.cum_samples"
_SEESAW_COUNTS_LOCE = "roi_heads.cls_loss.cum_samples"
_METHOD_STATE = re.compile(r"(^|\.)(score_tracker|cls_loss)\.")
_MMDET_VERSION = "2.8.0"  # the MMDetection release LOCE's configs follow (docs/parity.md)


@dataclass
class ConversionResult:
    """What a conversion wrote and decided (also printed line by line)."""

    path: Path
    lines: list[str] = field(default_factory=list)
    config_name: str | None = None
    normed_mask: bool | None = None
    category_ids: list[int] = field(default_factory=list)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors.

    Raises:
        CheckpointError: no such file, not a PyTorch file, or a file that needs an arbitrary
            Python object (the offending global is named; nothing of the file is run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return load_torch(path)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _split_mmdet(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of an MMDetection checkpoint or a bare state dict."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    if "model" in obj and "config" in obj and "category_ids" in obj:
        raise CheckpointError(f"{path} is already a loce checkpoint; `loce convert --to mmdet` "
                              "writes the MMDetection format")
    if "state_dict" in obj:
        sd, meta = obj["state_dict"], obj.get("meta") or {}
        if not _is_state_dict(sd):
            raise CheckpointError(f"{path}: 'state_dict' is not a mapping of names to tensors")
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"{path}: 'meta' is a {type(meta).__name__}, expected a dict")
        return dict(sd), dict(meta)
    if _is_state_dict(obj):
        return dict(obj), {}
    keys = ", ".join(sorted(str(k) for k in obj)[:6])
    raise CheckpointError(f"{path}: neither an MMDetection checkpoint ('meta', 'state_dict') "
                          f"nor a state dict; it holds {keys}")


def loce_config_name(spec: MMDetModelSpec) -> str:
    """The bundled loce config an MMDetection model corresponds to (the first that exists).

    LOCE's fine-tune → ``loce_mask_rcnn_r{50,101}_fpn_normed_mask_mstrain_2x_lvis_{v1,v0.5}``;
    Seesaw → ``seesaw_..._lvis_v1``; repeat factor sampling → ``rfs_..._lvis_v1``; otherwise
    the stage-1 config. Depth, data and heads the name does not match are set from the
    MMDetection config on top of it.
    """
    from loce.config import bundled_configs

    version = "v0.5" if spec.dataset == "lvis_v0.5" else "v1"
    depths = [f"r{spec.depth}", "r50"]
    if spec.method == "loce":
        stems = ["loce_mask_rcnn_{d}_fpn_normed_mask_mstrain_2x_lvis_{v}"]
    elif spec.method == "seesaw":
        stems = ["seesaw_mask_rcnn_{d}_fpn_normed_mask_rfs_mstrain_2x_lvis_{v}"]
    elif spec.sampler == "repeat_factor":
        stems = ["rfs_mask_rcnn_{d}_fpn_normed_mask_mstrain_2x_lvis_{v}"]
    else:
        stems = []
    stems.append("mask_rcnn_{d}_fpn_normed_mask_mstrain_2x_lvis_{v}")
    available = set(bundled_configs())
    for stem in stems:
        for v in (version, "v1"):
            for d in depths:
                name = stem.format(d=d, v=v)
                if name in available:
                    return name
    raise AssertionError("the bundled LVIS configs are missing")  # pragma: no cover


def _overrides(settings: Mapping[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def _load_loce_config(name: str, overrides: list[str], source: str):
    from loce.config import load_config

    try:
        return load_config(name, overrides)
    except ConfigError as err:
        raise CheckpointError(f"{source}: the loce config for this model is invalid: {err}"
                              ) from None


def _changes(settings: Mapping[str, Any], base) -> dict[str, Any]:
    """The settings whose values differ from the base config's (floats to 1e-9 relative, so
    that mmdet's 0-255 normalisation constants / 255 equal loce's)."""
    import math

    from loce.config import config_to_dict
    from loce.convert.mmcv_config import lookup

    tree = config_to_dict(base)

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, float) or isinstance(b, float):
            return isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
        return a == b

    return {k: v for k, v in settings.items() if not same(v, lookup(tree, k, object()))}


def _mask_decision(normed_mask: NormedMask, from_text: bool | None, fallback: bool,
                   what: str) -> tuple[bool, str]:
    if normed_mask not in ("auto", "yes", "no"):
        raise ConfigError(f"--normed-mask must be auto, yes or no, got {normed_mask!r}")
    if normed_mask == "auto":
        if from_text is not None:
            return from_text, f"{'normed' if from_text else 'plain'} — {what}"
        return fallback, (f"{'normed' if fallback else 'plain'} — from the loce config "
                          "(nothing else says; the weights cannot tell)")
    chosen = normed_mask == "yes"
    if from_text is not None and from_text != chosen:
        return chosen, (f"{'normed' if chosen else 'plain'} — OVERRIDING the config, which "
                        f"says {what}, because --normed-mask {normed_mask}")
    return chosen, f"{'normed' if chosen else 'plain'} — --normed-mask {normed_mask}"


def _fill_method_state(model: torch.nn.Module, sd: dict[str, Tensor]) -> list[str]:
    """Add the method-state buffers MMDetection does not save, at a fresh model's values."""
    added = []
    for key, value in model.state_dict().items():
        if key not in sd and _METHOD_STATE.search(key):
            sd[key] = value.detach().clone()
            added.append(key)
    return added


def _model_description(src: Path, meta: Mapping[str, Any], config: str | None, say: Log
                       ) -> tuple[str | None, MMDetModelSpec | None, str | None]:
    """``(config text, spec, loce base config)`` from an MMDetection config file, else the
    checkpoint's own text; the base is None when it is to be chosen from the spec."""
    loce_base: str | None = None
    text_source, values = None, None
    if config is not None and config.endswith(".py"):
        parsed = load_config_file(config)
        text_source, values = config, parsed.values
        # The merged config, as MMDetection stores it in meta['config'] (no _base_ left).
        text = "\n".join(f"{name} = {_pretty(value)}" for name, value in values.items()) + "\n"
    elif isinstance(meta.get("config"), str):
        text = meta["config"]
        parsed = parse_config_text(text)
        text_source, values = f"{src} meta['config']", parsed.values
        loce_base = config
    else:
        text, parsed = None, None
        loce_base = config
        if config is None:
            raise CheckpointError(
                f"{src}: holds no meta['config'] to read the model from; pass --config with its "
                "MMDetection config file (.py) or a loce config name, e.g. --config "
                "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
            )
    if config is not None and config.endswith(".py") and isinstance(meta.get("config"), str):
        say(f"  note: the model is read from {config}, not from the checkpoint's meta['config']")
    spec = read_model_spec(values, text_source) if values is not None else None
    if parsed is not None and parsed.skipped:
        say(f"  note: {len(parsed.skipped)} statement(s) of the config could not be read "
            f"(first: {parsed.skipped[0]})")
    return text, spec, loce_base


def _check_spec(spec: MMDetModelSpec, info: MMDetWeightsInfo, src: Path, say: Log) -> None:
    """The MMDetection config against the weights: depth, classes and classifier rows."""
    k = info.num_classes
    if spec.depth != info.depth:
        raise CheckpointError(f"{src}: the config describes ResNet-{spec.depth} but the "
                              f"weights are ResNet-{info.depth} (backbone.layer3 blocks)")
    if spec.num_classes is not None and spec.num_classes != k:
        raise CheckpointError(
            f"{src}: the config says num_classes={spec.num_classes} but "
            f"'roi_head.bbox_head.fc_reg.weight' regresses {k} classes; the config does "
            "not belong to these weights"
        )
    if spec.num_logits is not None and spec.num_logits != info.num_logits:
        raise CheckpointError(
            f"{src}: 'roi_head.bbox_head.fc_cls.weight' has {info.num_logits} rows but the "
            f"config's {'Seesaw' if spec.method == 'seesaw' else 'softmax'} classifier "
            f"needs {spec.num_logits} for {k} classes"
        )
    say(f"  detector   {spec.summary}")
    for note in spec.notes:
        say(f"  {note}")


def _loce_config(spec: MMDetModelSpec | None, info: MMDetWeightsInfo, loce_base: str | None,
                 normed_mask: NormedMask, src: Path, say: Log
                 ) -> tuple[Any, dict[str, Any], str, bool]:
    """``(cfg, settings, base name, normed)``: a bundled config by name plus what the
    MMDetection config says (``settings``, the values that differ from the base)."""
    k = info.num_classes
    seesaw_weights = info.num_logits == k + 2
    settings = dict(spec.settings) if spec is not None else {}
    if loce_base is None:
        assert spec is not None
        loce_base = loce_config_name(spec)
    base_cfg = _load_loce_config(loce_base, [], str(src))
    if spec is None:
        if base_cfg.model.backbone != f"resnet{info.depth}":
            raise CheckpointError(f"{src}: --config {loce_base} builds a {base_cfg.model.backbone}"
                                  f" but the weights are ResNet-{info.depth}")
        if seesaw_weights != (base_cfg.model.roi.cls_loss == "seesaw"):
            raise CheckpointError(
                f"{src}: 'roi_head.bbox_head.fc_cls.weight' has {info.num_logits} rows for {k} "
                f"classes ({'Seesaw' if seesaw_weights else 'softmax'}) but --config {loce_base} "
                f"uses model.roi.cls_loss={base_cfg.model.roi.cls_loss!r}"
            )
    settings = _changes(settings, base_cfg)
    what = f"{spec.mask_head} in the config" if spec is not None else ""
    normed, why = _mask_decision(normed_mask, spec.normed_mask if spec else None,
                                 base_cfg.model.mask.predictor == "normed", what)
    settings.pop("model.mask.predictor", None)
    if (base_cfg.model.mask.predictor == "normed") != normed:
        settings["model.mask.predictor"] = "normed" if normed else "plain"
    cfg = _load_loce_config(loce_base, _overrides(settings), str(src))
    say(f"  MASK HEAD  {why}")
    if not normed:
        say("             (a normed-head model read as plain gives plausible but wrong masks: "
            "check this against the model's config)")
    return cfg, settings, loce_base, normed


def _categories(meta: Mapping[str, Any], k: int, gt: str | os.PathLike | None,
                spec: MMDetModelSpec | None, src: Path, say: Log
                ) -> tuple[Sequence[str] | None, CategoryTable]:
    """``(meta["CLASSES"], category table)`` of the ``k`` classes."""
    classes = meta.get("CLASSES")
    if classes is not None and not isinstance(classes, (list, tuple)):
        raise CheckpointError(f"{src}: meta['CLASSES'] is a {type(classes).__name__}, "
                              "expected a list of class names")
    table = resolve_categories(k, classes, gt, source=str(src))
    dataset = {"lvis_v1": "LVIS v1", "lvis_v0.5": "LVIS v0.5"}.get(
        spec.dataset if spec else "", {1203: "LVIS v1", 1230: "LVIS v0.5"}.get(k, "not LVIS"))
    say(f"  classes    {k} (dataset {dataset}): {table.how}")
    return classes, table


def _say_settings(cfg, settings: Mapping[str, Any], loce_base: str, say: Log) -> None:
    test = cfg.model.test
    say(f"  test       score > {test.score_thresh:g}, NMS {test.nms_thresh:g}, "
        f"{test.detections_per_img} per image, RPN {cfg.model.rpn.pre_nms_top_n_test}/"
        f"{cfg.model.rpn.post_nms_top_n_test} NMS {cfg.model.rpn.nms_thresh:g}, mask >= "
        f"{test.mask_threshold:g}, resize {cfg.data.test_scale}/{cfg.data.test_max_size}")
    changed = ", ".join(f"{key}={json.dumps(value)}" for key, value in settings.items())
    say(f"  config     {loce_base}" + (f" with {changed}" if changed else ""))


def _loaded_model(cfg, info: MMDetWeightsInfo, weights: dict[str, Tensor],
                  counts: Tensor | None, src: Path, say: Log) -> torch.nn.Module:
    """The model ``cfg`` builds, with the weights (and Seesaw's counts) loaded strictly."""
    from loce import build
    from loce.engine.checkpoint import load_model_weights

    k = info.num_classes
    model = build.build_model(cfg, num_classes=k, load_backbone=False)
    if counts is not None:
        if cfg.model.roi.cls_loss != "seesaw" or counts.numel() != k + 1:
            raise CheckpointError(f"{src}: '{_SEESAW_COUNTS_MMDET}' ({counts.numel()} values) "
                                  f"does not fit a Seesaw model with {k} classes")
        weights[_SEESAW_COUNTS_LOCE] = torch.cat([counts[-1:], counts[:-1]]).to(torch.float64)
    added = _fill_method_state(model, weights)
    load_model_weights(model, weights, str(src), strict=True)
    extra = f", {len(added)} method-state buffer(s) at their initial values ({', '.join(added)})" \
        if added else ""
    say(f"  weights    {info.mmdet_keys} MMDetection keys -> {info.loce_keys} loce keys{extra}; "
        "strict load OK")
    return model


def _loce_checkpoint(model: torch.nn.Module, cfg, k: int, table: CategoryTable, src: Path,
                     meta: Mapping[str, Any], text: str | None, classes: Sequence[str] | None, *,
                     has_seesaw_counts: bool, decisions: list[str]) -> dict[str, Any]:
    """The checkpoint in ``loce train``'s format, with the source's metadata."""
    from loce.config import config_to_dict

    return {
        "model": {key: value for key, value in model.state_dict().items()},
        "config": config_to_dict(cfg),
        "num_classes": k,
        "category_ids": table.ids,
        "category_names": table.names,
        "converted_from": {
            "format": "mmdet",
            "file": src.name,
            "mmdet_version": meta.get("mmdet_version"),
            "epoch": meta.get("epoch"),
            "config_text": text,
            "CLASSES": list(classes) if classes is not None else None,
            "has_seesaw_counts": has_seesaw_counts,
            "decisions": list(decisions),
        },
    }


def mmdet_to_loce(src: str | os.PathLike, dst: str | os.PathLike, *,
                  config: str | None = None, normed_mask: NormedMask = "auto",
                  gt: str | os.PathLike | None = None, log: Log = print) -> ConversionResult:
    """Convert an MMDetection Mask R-CNN checkpoint to a loce checkpoint.

    Args:
        src: the MMDetection ``.pth`` (or a bare state dict with ``config``).
        dst: the loce checkpoint to write (atomically; nothing is written on error).
        config: an MMDetection config file (``*.py``, used instead of ``meta["config"]``) or
            a loce config (bundled name or YAML, used instead of the automatic choice).
        normed_mask: ``"auto"`` (from the config), ``"yes"`` or ``"no"``.
        gt: an LVIS annotation file to resolve the category ids by name.
        log: receives one line per decision.

    Raises:
        CheckpointError: unreadable file, an architecture loce does not have, a key or shape
            that does not fit, metadata that contradicts the weights.
    """
    from loce.fileio import save_torch_atomic
    from loce.models.mmdet_weights import mmdet_to_loce_state_dict

    src, dst = Path(src), Path(dst)
    state, meta = _split_mmdet(read_checkpoint(src), src)
    result = ConversionResult(dst)

    def say(line: str) -> None:
        result.lines.append(line)
        log(line)

    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    counts = state.pop(_SEESAW_COUNTS_MMDET, None)
    say(f"reading {src}: {'MMDetection ' + str(meta.get('mmdet_version')) if meta else 'a bare state dict'}"
        f", {len(state) + (counts is not None)} tensors")

    # The model description: an MMDetection config file, else the checkpoint's own text.
    text, spec, loce_base = _model_description(src, meta, config, say)
    weights, info = mmdet_to_loce_state_dict(state, source=str(src))
    k = info.num_classes
    if spec is not None:
        _check_spec(spec, info, src, say)

    # The loce config: a bundled one by name plus what the MMDetection config says.
    cfg, settings, loce_base, normed = _loce_config(spec, info, loce_base, normed_mask, src, say)
    result.config_name, result.normed_mask = loce_base, normed
    classes, table = _categories(meta, k, gt, spec, src, say)
    result.category_ids = table.ids
    _say_settings(cfg, settings, loce_base, say)

    model = _loaded_model(cfg, info, weights, counts, src, say)
    out = _loce_checkpoint(model, cfg, k, table, src, meta, text, classes,
                           has_seesaw_counts=counts is not None, decisions=result.lines)
    save_torch_atomic(out, dst)
    say(f"wrote {dst}")
    return result


# ------------------------------------------------------------------------------ loce -> mmdet


def _pretty(value: Any, indent: int = 0) -> str:
    """``value`` as mmcv pretty-printed Python (``dict(...)`` for identifier keys)."""
    inner = "    " * (indent + 1)
    if isinstance(value, Mapping):
        if not value:
            return "dict()"
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            items = [f"{inner}{k}={_pretty(v, indent + 1)}" for k, v in value.items()]
            return "dict(\n" + ",\n".join(items) + ")"
        items = [f"{inner}{k!r}: {_pretty(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "}"
    if isinstance(value, (list, tuple)):
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        body = ", ".join(_pretty(v, indent + 1) for v in value)
        if isinstance(value, tuple) and len(value) == 1:
            body += ","
        return f"{open_}{body}{close}"
    if isinstance(value, Unparsed):
        return value.source
    return repr(value)


def _mmdet_bbox_head(cfg, k: int, loss: str) -> dict[str, Any]:
    """MMDetection's ``roi_head.bbox_head`` of the loce model ``cfg``, classification loss ``loss``."""
    m = cfg.model
    loss_cls: dict[str, Any] = {"type": loss, "use_sigmoid": False, "loss_weight": 1.0}
    if loss == "SeesawLoss":
        s = m.roi.seesaw
        loss_cls = {"type": loss, "p": s.p, "q": s.q, "eps": s.eps, "num_classes": k,
                    "loss_weight": 1.0}
    bbox_head: dict[str, Any] = {
        "type": "LoceShared2FCBBoxHead" if cfg.loce.enabled else "Shared2FCBBoxHead",
        "in_channels": 256, "fc_out_channels": m.roi.representation_size, "roi_feat_size": 7,
        "num_classes": k,
        "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0, 0.0, 0.0, 0.0],
                       "target_stds": [1.0 / w for w in m.roi.bbox_reg_weights]},
        "reg_class_agnostic": False,
    }
    if m.roi.classifier == "normed":
        bbox_head["cls_predictor_cfg"] = {"type": "NormedLinear", "tempearture": m.roi.cosine_scale}
    bbox_head["loss_cls"] = loss_cls
    bbox_head["loss_bbox"] = {"type": "L1Loss", "loss_weight": 1.0}
    return bbox_head


def _mmdet_model(cfg, k: int, loss: str) -> dict[str, Any]:
    """MMDetection's ``model`` of the loce model ``cfg``: Mask R-CNN with its test settings."""
    m = cfg.model
    bbox_head = _mmdet_bbox_head(cfg, k, loss)
    mask_head: dict[str, Any] = {
        "type": "FCNNormMaskHead" if m.mask.predictor == "normed" else "FCNMaskHead",
        "num_convs": len(m.mask.head_layers), "in_channels": 256,
        "conv_out_channels": m.mask.head_layers[-1], "num_classes": k,
        "loss_mask": {"type": "CrossEntropyLoss", "use_mask": True, "loss_weight": 1.0},
    }
    roi_layer = {"type": "RoIAlign", "output_size": 7, "sampling_ratio": 0}
    model = {
        "type": "MaskRCNN",
        "backbone": {"type": "ResNet", "depth": int(m.backbone[len("resnet"):]), "num_stages": 4,
                     "out_indices": (0, 1, 2, 3), "frozen_stages": m.frozen_stages,
                     "norm_cfg": {"type": "BN", "requires_grad": True}, "norm_eval": True,
                     "style": "pytorch"},
        "neck": {"type": "FPN", "in_channels": [256, 512, 1024, 2048], "out_channels": 256,
                 "num_outs": 5},
        "rpn_head": {
            "type": "RPNHead", "in_channels": 256, "feat_channels": 256,
            "anchor_generator": {"type": "AnchorGenerator", "scales": [m.rpn.anchor_scale],
                                 "ratios": list(m.rpn.aspect_ratios),
                                 "strides": [4, 8, 16, 32, 64]},
            "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0, 0.0, 0.0, 0.0],
                           "target_stds": [1.0, 1.0, 1.0, 1.0]},
            "loss_cls": {"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 1.0},
            "loss_bbox": {"type": "L1Loss", "loss_weight": 1.0}},
        "roi_head": {
            "type": "LoceRoIHead" if cfg.loce.enabled else "StandardRoIHead",
            "bbox_roi_extractor": {"type": "SingleRoIExtractor", "roi_layer": roi_layer,
                                   "out_channels": 256, "featmap_strides": [4, 8, 16, 32]},
            "bbox_head": bbox_head,
            "mask_roi_extractor": {"type": "SingleRoIExtractor",
                                   "roi_layer": {**roi_layer, "output_size": 14},
                                   "out_channels": 256, "featmap_strides": [4, 8, 16, 32]},
            "mask_head": mask_head},
        "test_cfg": {
            "rpn": {"nms_pre": m.rpn.pre_nms_top_n_test, "max_per_img": m.rpn.post_nms_top_n_test,
                    "nms": {"type": "nms", "iou_threshold": m.rpn.nms_thresh},
                    "min_bbox_size": m.parity.rpn_min_size},
            "rcnn": {"score_thr": m.test.score_thresh,
                     "nms": {"type": "nms", "iou_threshold": m.test.nms_thresh},
                     "max_per_img": m.test.detections_per_img,
                     "mask_thr_binary": m.test.mask_threshold}},
    }
    return model


def _mmdet_data(d, dataset_type: str, mean: list[float], std: list[float]
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """MMDetection's ``test_pipeline`` and ``data`` for the loce data config ``d``."""
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": (d.test_max_size, d.test_scale), "flip": False,
         "transforms": [{"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
                        {"type": "Normalize", "mean": mean, "std": std, "to_rgb": True},
                        {"type": "Pad", "size_divisor": 32},
                        {"type": "ImageToTensor", "keys": ["img"]},
                        {"type": "Collect", "keys": ["img"]}]},
    ]
    train: dict[str, Any] = {"type": dataset_type, "ann_file": d.train_ann,
                             "img_prefix": d.train_images}
    if d.sampler == "repeat_factor":
        train = {"type": "ClassBalancedDataset", "oversample_thr": d.repeat_threshold,
                 "dataset": train}
    data = {"train": train,
            "test": {"type": dataset_type, "ann_file": d.val_ann, "img_prefix": d.val_images,
                     "pipeline": test_pipeline}}
    return test_pipeline, data


def mmdet_config_text(cfg, num_classes: int, dataset_type: str = "LVISV1Dataset") -> str:
    """An MMDetection 2.x config text describing the loce model ``cfg`` (for ``--to mmdet``).

    Raises:
        CheckpointError: a model MMDetection's Mask R-CNN cannot describe (another backbone,
            a classification loss without an MMDetection counterpart here, FPN width).
    """
    m = cfg.model
    if m.backbone not in ("resnet50", "resnet101") or m.fpn_channels != 256:
        raise CheckpointError(f"model.backbone={m.backbone!r} with {m.fpn_channels} FPN channels "
                              "has no MMDetection Mask R-CNN R50/R101-FPN counterpart")
    loss = "EquilibriumLoss" if cfg.loce.enabled else {
        "cross_entropy": "CrossEntropyLoss", "seesaw": "SeesawLoss"}.get(m.roi.cls_loss)
    if loss is None or m.roi.classifier == "cosine":
        raise CheckpointError(
            f"model.roi.cls_loss={m.roi.cls_loss!r} with a {m.roi.classifier} classifier has no "
            "MMDetection counterpart loce writes (softmax cross-entropy, LOCE, Seesaw)")
    k = int(num_classes)
    model = _mmdet_model(cfg, k, loss)
    mean = [round(v * 255.0, 6) for v in m.image_mean]
    std = [round(v * 255.0, 6) for v in m.image_std]
    test_pipeline, data = _mmdet_data(cfg.data, dataset_type, mean, std)
    parts = [f"model = {_pretty(model)}",
             f"dataset_type = {dataset_type!r}",
             f"img_norm_cfg = {_pretty({'mean': mean, 'std': std, 'to_rgb': True})}",
             f"test_pipeline = {_pretty(test_pipeline)}",
             f"data = {_pretty(data)}"]
    return "\n".join(parts) + "\n"


def loce_to_mmdet(src: str | os.PathLike, dst: str | os.PathLike, *,
                  log: Log = print) -> ConversionResult:
    """Write a loce checkpoint in MMDetection's format (``meta`` with ``CLASSES`` and
    ``config``, and ``state_dict``).

    Raises:
        CheckpointError: not a loce checkpoint, or a model MMDetection's Mask R-CNN R50/R101-FPN
            cannot hold.
    """
    from loce.config import config_from_dict
    from loce.engine.checkpoint import load_checkpoint_file
    from loce.fileio import save_torch_atomic
    from loce.models.mmdet_weights import loce_to_mmdet_state_dict

    src, dst = Path(src), Path(dst)
    data = load_checkpoint_file(src)
    if not all(key in data for key in ("model", "config", "category_ids")):
        raise CheckpointError(f"{src}: not a loce checkpoint (it needs 'model', 'config' and "
                              "'category_ids'); `loce convert` without --to reads MMDetection files")
    result = ConversionResult(dst)

    def say(line: str) -> None:
        result.lines.append(line)
        log(line)

    cfg = config_from_dict(data["config"], f"{src} (stored config)")
    k = len(data["category_ids"])
    sd = dict(data["model"])
    counts = sd.pop(_SEESAW_COUNTS_LOCE, None)
    dropped = sorted(key for key in sd if _METHOD_STATE.search(key))
    for key in dropped:
        sd.pop(key)
    source = data.get("converted_from") or {}
    text = source.get("config_text") if source.get("format") == "mmdet" else None
    if text is None:
        text = mmdet_config_text(cfg, k)
        say("  config     written from the loce config")
    else:
        say(f"  config     the original MMDetection config text of {source.get('file')}")
    mmdet_sd = loce_to_mmdet_state_dict(sd, source=str(src))
    if counts is not None and (source.get("has_seesaw_counts", True)):
        mmdet_sd[_SEESAW_COUNTS_MMDET] = torch.cat([counts[1:], counts[:1]]).to(torch.float32)
    classes = source.get("CLASSES") or list(data.get("category_names") or
                                            [str(c) for c in data["category_ids"]])
    meta = {"CLASSES": tuple(classes), "config": text,
            "mmdet_version": source.get("mmdet_version") or _MMDET_VERSION}
    from loce import __version__

    meta["converted_by"] = f"loce {__version__}"
    if source.get("epoch") is not None:
        meta["epoch"] = source["epoch"]
    if dropped:
        say(f"  note       not in MMDetection's format, dropped: {', '.join(dropped)}")
    save_torch_atomic({"meta": meta, "state_dict": mmdet_sd}, dst)
    say(f"  weights    {len(data['model'])} loce keys -> {len(mmdet_sd)} MMDetection keys")
    say(f"wrote {dst}")
    return result
