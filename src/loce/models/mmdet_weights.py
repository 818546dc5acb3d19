"""State-dict key map between MMDetection 2.x Mask R-CNN R50/R101-FPN and loce's Mask R-CNN.

The map is one-to-one by name except for three tensor families (docs/parity.md §3):

* ``roi_head.bbox_head.fc_cls``: MMDetection puts the background logit last (``C' - 1``);
  loce puts it first. Rows are reordered ``[C' - 1, 0, 1, ..., C' - 2]``. The same move holds for
  Seesaw's ``K + 2`` classifier, whose MMDetection order is ``[u_1..u_K, o_fg, o_bg]`` and
  loce's ``[o_bg, u_1..u_K, o_fg]``.
* ``roi_head.bbox_head.fc_reg``: MMDetection regresses ``4K`` deltas, loce ``4(K + 1)``;
  four zero rows are prepended for the background, which inference never reads.
* ``roi_head.mask_head.conv_logits``: one zero channel is prepended for the background. With
  the normed mask head a zero kernel normalises to zero, so the background logit is its bias, 0.

Every ``num_batches_tracked`` counter is dropped (loce's batch norms keep none); floating-point
tensors are cast to float32. R50 has 360 MMDetection keys and 307 loce keys, R101 666 and
562. The inverse map restores the MMDetection layout bit for bit, with zero counters.

Shape shorthand:
    K   foreground classes          C'  classifier rows (K + 1, or K + 2 for Seesaw)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from loce.errors import CheckpointError

__all__ = [
    "MMDetWeightsInfo",
    "loce_to_mmdet_state_dict",
    "mmdet_key_shapes",
    "mmdet_to_loce_state_dict",
]

#: ResNet blocks per stage.
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_FPN_IN = (256, 512, 1024, 2048)


@dataclass(frozen=True)
class MMDetWeightsInfo:
    """What a converted MMDetection state dict holds.

    Attributes:
        depth: ResNet depth, 50 or 101.
        num_classes: K, foreground classes.
        num_logits: C', rows of the box classifier (K + 1, or K + 2 for Seesaw).
        mmdet_keys: keys read (``num_batches_tracked`` included).
        loce_keys: keys written.
    """

    depth: int
    num_classes: int
    num_logits: int
    mmdet_keys: int
    loce_keys: int


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (() if n == "num_batches_tracked" else (c,)) for n in _BN}


def mmdet_key_shapes(depth: int, num_classes: int, *,
                     num_logits: int | None = None) -> dict[str, tuple[int, ...]]:
    """The MMDetection Mask R-CNN state-dict table, in MMDetection's key order.

    Args:
        depth: 50 or 101.
        num_classes: K.
        num_logits: rows of ``fc_cls`` (default K + 1; K + 2 for Seesaw).

    Returns:
        ``{key: shape}``; ``num_batches_tracked`` entries have shape ``()`` (int64 scalars).
    """
    if depth not in BLOCKS:
        raise ValueError(f"depth must be 50 or 101, got {depth}")
    k = int(num_classes)
    c = k + 1 if num_logits is None else int(num_logits)
    t: dict[str, tuple[int, ...]] = {"backbone.conv1.weight": (64, 3, 7, 7)}
    t.update(_bn("backbone.bn1", 64))
    inplanes = 64
    for s, n in enumerate(BLOCKS[depth], start=1):
        planes = 64 * 2 ** (s - 1)
        for b in range(n):
            p = f"backbone.layer{s}.{b}"
            t[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            t.update(_bn(f"{p}.bn1", planes))
            t[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            t.update(_bn(f"{p}.bn2", planes))
            t[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            t.update(_bn(f"{p}.bn3", 4 * planes))
            if b == 0:
                t[f"{p}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
                t.update(_bn(f"{p}.downsample.1", 4 * planes))
            inplanes = 4 * planes
    for i, cin in enumerate(_FPN_IN):
        t[f"neck.lateral_convs.{i}.conv.weight"] = (256, cin, 1, 1)
        t[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(4):
        t[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        t[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    t.update({
        "rpn_head.rpn_conv.weight": (256, 256, 3, 3), "rpn_head.rpn_conv.bias": (256,),
        "rpn_head.rpn_cls.weight": (3, 256, 1, 1), "rpn_head.rpn_cls.bias": (3,),
        "rpn_head.rpn_reg.weight": (12, 256, 1, 1), "rpn_head.rpn_reg.bias": (12,),
        "roi_head.bbox_head.fc_cls.weight": (c, 1024), "roi_head.bbox_head.fc_cls.bias": (c,),
        "roi_head.bbox_head.fc_reg.weight": (4 * k, 1024), "roi_head.bbox_head.fc_reg.bias": (4 * k,),
        "roi_head.bbox_head.shared_fcs.0.weight": (1024, 256 * 7 * 7),
        "roi_head.bbox_head.shared_fcs.0.bias": (1024,),
        "roi_head.bbox_head.shared_fcs.1.weight": (1024, 1024),
        "roi_head.bbox_head.shared_fcs.1.bias": (1024,),
    })
    for i in range(4):
        t[f"roi_head.mask_head.convs.{i}.conv.weight"] = (256, 256, 3, 3)
        t[f"roi_head.mask_head.convs.{i}.conv.bias"] = (256,)
    t.update({
        "roi_head.mask_head.upsample.weight": (256, 256, 2, 2),
        "roi_head.mask_head.upsample.bias": (256,),
        "roi_head.mask_head.conv_logits.weight": (k, 256, 1, 1),
        "roi_head.mask_head.conv_logits.bias": (k,),
    })
    return t


# (MMDetection name, loce name) templates for every name that maps one-to-one; ``{i}`` is an
# index, ``{p}`` "weight" or "bias", ``{rest}`` any suffix. Both directions are compiled from it.
_PAIRS: tuple[tuple[str, str], ...] = (
    ("backbone.{rest}", "backbone.body.{rest}"),
    ("neck.lateral_convs.{i}.conv.{p}", "backbone.fpn.inner_blocks.{i}.0.{p}"),
    ("neck.fpn_convs.{i}.conv.{p}", "backbone.fpn.layer_blocks.{i}.0.{p}"),
    ("rpn_head.rpn_conv.{p}", "rpn.head.conv.0.0.{p}"),
    ("rpn_head.rpn_cls.{p}", "rpn.head.cls_logits.{p}"),
    ("rpn_head.rpn_reg.{p}", "rpn.head.bbox_pred.{p}"),
    ("roi_head.bbox_head.shared_fcs.0.{p}", "roi_heads.box_head.fc6.{p}"),
    ("roi_head.bbox_head.shared_fcs.1.{p}", "roi_heads.box_head.fc7.{p}"),
    ("roi_head.bbox_head.fc_cls.{p}", "roi_heads.box_predictor.cls_score.{p}"),
    ("roi_head.bbox_head.fc_reg.{p}", "roi_heads.box_predictor.bbox_pred.{p}"),
    ("roi_head.mask_head.convs.{i}.conv.{p}", "roi_heads.mask_head.{i}.0.{p}"),
    ("roi_head.mask_head.upsample.{p}", "roi_heads.mask_predictor.conv5_mask.{p}"),
    ("roi_head.mask_head.conv_logits.{p}", "roi_heads.mask_predictor.mask_fcn_logits.{p}"),
)
_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "rest": r"(?P<rest>.+)"}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("^" + "".join(_GROUPS[x] if j % 2 else re.escape(x)
                                    for j, x in enumerate(parts)) + "$")


_RULES = tuple((_compile(m), t) for m, t in _PAIRS)
_INVERSE = tuple((_compile(t), m) for m, t in _PAIRS)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in rules:
        m = pattern.match(key)
        if m:
            return template.format(**m.groupdict())
    return None


def _infer_depth(keys: set[str], source: str) -> int:
    blocks = [int(m.group(1)) for k in keys if (m := re.match(r"^backbone\.layer3\.(\d+)\.", k))]
    if not blocks:
        raise CheckpointError(
            f"{source}: no 'backbone.layer3.*' weights: not a ResNet Mask R-CNN state dict "
            "(loce converts MMDetection Mask R-CNN R50/R101-FPN checkpoints)"
        )
    last = max(blocks)
    depths = {BLOCKS[d][2] - 1: d for d in BLOCKS}
    if last not in depths:
        raise CheckpointError(
            f"{source}: the backbone's layer3 has {last + 1} blocks; loce converts ResNet-50 (6) "
            "and ResNet-101 (23) Mask R-CNN checkpoints"
        )
    return depths[last]


def _tensor(sd: Mapping[str, object], key: str, source: str) -> Tensor:
    value = sd[key]
    if not isinstance(value, Tensor):
        raise CheckpointError(f"{source}: '{key}' is a {type(value).__name__}, not a tensor")
    return value


def _check_key_set(keys: set[str], table: Mapping[str, tuple[int, ...]], depth: int,
                   num_classes: int, source: str) -> None:
    """Refuse a key the model does not have (with the likely cause) or one it misses."""
    unknown = sorted(keys - set(table))
    if unknown:
        hint = ""
        if any(k.startswith("neck.fpn_convs.4") for k in unknown):
            hint = " (an FPN with extra convolutions: add_extra_convs is not supported)"
        elif any(k.startswith("roi_head.bbox_head.") for k in unknown):
            hint = " (a box head other than Shared2FCBBoxHead)"
        elif any(k.startswith("roi_head.mask_head.") for k in unknown):
            hint = " (a mask head other than FCNMaskHead / FCNNormMaskHead with 4 convs)"
        elif any(".conv2.conv_offset" in k for k in unknown):
            hint = " (deformable convolutions are not supported)"
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise CheckpointError(f"{source}: unknown key '{unknown[0]}'{more}{hint}; "
                              f"loce converts Mask R-CNN R{depth}-FPN checkpoints only")
    missing = [k for k in table if k not in keys]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{source}: missing key '{missing[0]}'{more} of a Mask R-CNN "
                              f"R{depth}-FPN with {num_classes} classes")


def mmdet_to_loce_state_dict(sd: Mapping[str, object], *, source: str = "checkpoint"
                             ) -> tuple[dict[str, Tensor], MMDetWeightsInfo]:
    """Convert an MMDetection Mask R-CNN R50/R101-FPN state dict to loce's names and layout.

    Args:
        sd: the ``state_dict`` of an MMDetection checkpoint (a ``module.`` prefix is stripped).
        source: the file name, for error messages.

    Returns:
        ``(state_dict, info)``: loce keys (307 for R50, 562 for R101), float32 tensors, and
        what was found. Load it with ``strict=True``.

    Raises:
        CheckpointError: an unknown key (named, with the likely cause), a missing key, or a
            tensor whose shape contradicts the others.
    """
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors)")
    if all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    keys = set(sd)
    depth = _infer_depth(keys, source)
    for key in ("roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_reg.weight"):
        if key not in sd:
            found = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in keys if "." in k})
            raise CheckpointError(
                f"{source}: missing '{key}'; found modules {', '.join(found[:8])}: loce converts "
                "Mask R-CNN with one Shared2FC box head (not Cascade R-CNN, RetinaNet, ...)"
            )
    num_logits = int(_tensor(sd, "roi_head.bbox_head.fc_cls.weight", source).shape[0])
    num_classes = int(_tensor(sd, "roi_head.bbox_head.fc_reg.weight", source).shape[0]) // 4
    if num_logits not in (num_classes + 1, num_classes + 2):
        raise CheckpointError(
            f"{source}: 'roi_head.bbox_head.fc_cls.weight' has {num_logits} rows but "
            f"'fc_reg.weight' regresses {num_classes} classes (expected {num_classes + 1} rows, "
            f"or {num_classes + 2} for Seesaw); a class-agnostic regressor is not supported"
        )
    table = mmdet_key_shapes(depth, num_classes, num_logits=num_logits)
    _check_key_set(keys, table, depth, num_classes, source)
    out: dict[str, Tensor] = {}
    for key, shape in table.items():
        value = _tensor(sd, key, source)
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"{source}: '{key}' has shape {tuple(value.shape)}, expected {shape} for a "
                f"Mask R-CNN R{depth}-FPN with {num_classes} classes"
            )
        if key.endswith("num_batches_tracked"):
            continue
        if value.is_floating_point():
            value = value.detach().to(torch.float32)
        if key.startswith("roi_head.bbox_head.fc_cls."):
            order = torch.cat([torch.tensor([num_logits - 1]), torch.arange(num_logits - 1)])
            value = value[order]
        elif key.startswith("roi_head.bbox_head.fc_reg."):
            value = torch.cat([value.new_zeros((4, *value.shape[1:])), value])
        elif key.startswith("roi_head.mask_head.conv_logits."):
            value = torch.cat([value.new_zeros((1, *value.shape[1:])), value])
        name = _rename(key, _RULES)
        assert name is not None, key  # every table key has a rule
        out[name] = value.contiguous()
    info = MMDetWeightsInfo(depth, num_classes, num_logits, len(table), len(out))
    return out, info


def loce_to_mmdet_state_dict(sd: Mapping[str, Tensor], *, source: str = "checkpoint"
                             ) -> dict[str, Tensor]:
    """The exact inverse of :func:`mmdet_to_loce_state_dict` (counters set to 0).

    Args:
        sd: a loce Mask R-CNN R50/R101-FPN state dict (model weights only).
        source: the file name, for error messages.

    Returns:
        The MMDetection state dict in MMDetection's key order.

    Raises:
        CheckpointError: a key with no MMDetection counterpart (e.g. a method-state buffer or
            another backbone), or a layout that is not Mask R-CNN R50/R101-FPN.
    """
    renamed: dict[str, Tensor] = {}
    for key, value in sd.items():
        name = _rename(key, _INVERSE)
        if name is None:
            raise CheckpointError(
                f"{source}: '{key}' has no MMDetection counterpart; only plain Mask R-CNN "
                "R50/R101-FPN weights can be written in MMDetection's format"
            )
        renamed[name] = value
    depth = _infer_depth(set(renamed), source)
    cls = renamed.get("roi_head.bbox_head.fc_cls.weight")
    reg = renamed.get("roi_head.bbox_head.fc_reg.weight")
    if cls is None or reg is None:
        raise CheckpointError(f"{source}: no box predictor weights "
                              "(roi_heads.box_predictor.cls_score / bbox_pred)")
    num_logits, num_classes = int(cls.shape[0]), int(reg.shape[0]) // 4 - 1
    table = mmdet_key_shapes(depth, num_classes, num_logits=num_logits)
    out: dict[str, Tensor] = {}
    for key, shape in table.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        if key not in renamed:
            raise CheckpointError(f"{source}: no weights for MMDetection's '{key}'")
        value = renamed[key]
        if key.startswith("roi_head.bbox_head.fc_cls."):
            value = torch.cat([value[1:], value[:1]])
        elif key.startswith("roi_head.bbox_head.fc_reg."):
            value = value[4:]
        elif key.startswith("roi_head.mask_head.conv_logits."):
            value = value[1:]
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{source}: MMDetection's '{key}' would have shape "
                                  f"{tuple(value.shape)}, expected {shape}")
        out[key] = value.contiguous()
    extra = set(renamed) - set(table)
    if extra:
        raise CheckpointError(f"{source}: '{sorted(extra)[0]}' does not fit a Mask R-CNN "
                              f"R{depth}-FPN with {num_classes} classes")
    return out
