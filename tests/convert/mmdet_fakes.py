"""Fake MMDetection checkpoints for the converter tests.

Config texts are written here in mmcv's pretty-printed form (``Config.pretty_text``) with the
values of the original configs: LOCE's stage-1 and fine-tune configs (MMDetection 2.8 test
keys ``nms_thr``/``max_num``), MMDetection's LVIS repeat-factor-sampling Mask R-CNN
(``ClassBalancedDataset``, plain ``FCNMaskHead``, later 2.x test keys) and Seesaw's
(``NormedLinear`` classifier with K + 2 outputs, optionally a ``NormedConv2d`` mask
predictor). Weights are random tensors of the shapes in ``mmdet_key_shapes``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from loce.models.mmdet_weights import mmdet_key_shapes

_BACKBONE = """\
    backbone=dict(
        type='{backbone}',
        depth={depth},{resnext}
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch'),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[8],
            ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
"""

_ROI = """\
    roi_head=dict(
        type='{roi_head}',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='{bbox_head}',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes={k},
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0.0, 0.0, 0.0, 0.0],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,{cls_predictor}
            loss_cls={loss_cls},
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='{mask_head}',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes={k},{mask_predictor}
            loss_mask=dict(
                type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
"""

# The test settings, in MMDetection 2.8's spelling (LOCE's configs) and the later 2.x one.
_TEST_28 = """\
    test_cfg=dict(
        rpn=dict(
            nms_across_levels=False,
            nms_pre=1000,
            nms_post=1000,
            max_num=1000,
            nms_thr=0.7,
            min_bbox_size=0),
        rcnn=dict(
            score_thr={score_thr},
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img={max_per_img},
            mask_thr_binary=0.5)))
"""
_TEST_2X = """\
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            score_thr={score_thr},
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img={max_per_img},
            mask_thr_binary=0.5)))
"""

_DATA = """\
dataset_type = '{dataset_type}'
data_root = '{root}'
img_norm_cfg = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='Resize',
        img_scale=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                   (1333, 768), (1333, 800)],
        multiscale_mode='value',
        keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(
        type='Normalize',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks'])
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(1333, 800),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(
                type='Normalize',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                to_rgb=True),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img'])
        ])
]
data = dict(
    samples_per_gpu=2,
    workers_per_gpu=2,
    train={train},
    test=dict(
        type='{dataset_type}',
        ann_file='{root}annotations/{val_file}',
        img_prefix='{val_prefix}',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(
                type='MultiScaleFlipAug',
                img_scale=(1333, 800),
                flip=False,
                transforms=[
                    dict(type='Resize', keep_ratio=True),
                    dict(type='RandomFlip'),
                    dict(type='Pad', size_divisor=32),
                    dict(type='ImageToTensor', keys=['img']),
                    dict(type='Collect', keys=['img'])
                ])
        ]))
evaluation = dict(metric=['bbox', 'segm'], interval=12)
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=500,
    warmup_ratio=0.001,
    step={steps})
total_epochs = {epochs}
load_from = {load_from}
resume_from = None
workflow = [('train', 1)]
"""


def mmdet_config(depth: int = 50, k: int = 1203, *, variant: str = "stage1",
                 mask_head: str | None = None, dataset: str = "v1", score_thr: float = 0.0001,
                 max_per_img: int = 300, detector: str = "MaskRCNN",
                 backbone: str = "ResNet") -> str:
    """An MMDetection config text as ``meta['config']`` holds it.

    Args:
        variant: ``"stage1"`` (LOCE stage 1), ``"loce"`` (LOCE's fine-tune: LoceRoIHead,
            EquilibriumLoss, a load_from), ``"rfs"`` (MMDetection's LVIS RFS Mask R-CNN),
            ``"seesaw"`` / ``"seesaw_normed"`` (Seesaw with RFS, plain / NormedConv2d mask
            predictor).
        mask_head: override the mask head type.
    """
    roi_head, bbox_head = "StandardRoIHead", "Shared2FCBBoxHead"
    loss_cls = "dict(\n                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)"
    cls_predictor = mask_predictor = ""
    steps, epochs, load_from = "[16, 22]", 24, "None"
    test = _TEST_28
    head = "FCNNormMaskHead"
    if variant == "loce":
        roi_head, bbox_head = "LoceRoIHead", "LoceShared2FCBBoxHead"
        loss_cls = ("dict(\n                type='EquilibriumLoss', use_sigmoid=False, "
                    "loss_weight=1.0)")
        steps, epochs = "[3, 5]", 6
        load_from = ("'./work_dirs/mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1/"
                     "epoch_24.pth'")
    elif variant in ("rfs", "seesaw", "seesaw_normed"):
        test, head = _TEST_2X, "FCNMaskHead"
        if variant != "rfs":
            cls_predictor = "\n            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),"
            loss_cls = (f"dict(\n                type='SeesawLoss',\n                p=0.8,\n"
                        f"                q=2.0,\n                num_classes={k},\n"
                        "                loss_weight=1.0)")
        if variant == "seesaw_normed":
            mask_predictor = ("\n            predictor_cfg=dict(type='NormedConv2d', "
                              "tempearture=20),")
    head = mask_head or head
    resnext = ("\n        groups=32,\n        base_width=4," if backbone == "ResNeXt" else "")
    body = (f"model = dict(\n    type='{detector}',\n"
            + _BACKBONE.format(backbone=backbone, depth=depth, resnext=resnext)
            + _ROI.format(roi_head=roi_head, bbox_head=bbox_head, k=k, loss_cls=loss_cls,
                          cls_predictor=cls_predictor, mask_head=head,
                          mask_predictor=mask_predictor)
            + test.format(score_thr=score_thr, max_per_img=max_per_img))
    if dataset == "v0.5":
        dataset_type, root = "LVISV05Dataset", "data/lvis_v0.5/"
        train_file, val_file = "lvis_v0.5_train.json", "lvis_v0.5_val.json"
        train_prefix, val_prefix = root + "train2017/", root + "val2017/"
    else:
        dataset_type, root = "LVISV1Dataset", "data/lvis_v1/"
        train_file, val_file = "lvis_v1_train.json", "lvis_v1_val.json"
        train_prefix = val_prefix = root
    train = (f"dict(\n        type='{dataset_type}',\n        ann_file='{root}annotations/"
             f"{train_file}',\n        img_prefix='{train_prefix}')")
    if variant in ("rfs", "seesaw", "seesaw_normed"):
        train = (f"dict(\n        type='ClassBalancedDataset',\n        oversample_thr=0.001,\n"
                 f"        dataset={train})")
    return body + _DATA.format(dataset_type=dataset_type, root=root, val_file=val_file,
                               val_prefix=val_prefix, train=train, steps=steps, epochs=epochs,
                               load_from=load_from)


def random_mmdet_state(depth: int, k: int, *, num_logits: int | None = None,
                       seed: int = 0, zeros: bool = False) -> dict[str, torch.Tensor]:
    """Random float32 tensors of MMDetection's Mask R-CNN shapes (counters zero).

    ``zeros=True`` gives expanded views of one zero instead: the right shapes at no memory
    or disk cost (``torch.save`` stores one value per tensor), for tests about keys, shapes
    and metadata.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in mmdet_key_shapes(depth, k, num_logits=num_logits).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
        elif zeros:
            out[key] = torch.zeros(()).expand(shape)
        else:
            out[key] = torch.randn(shape, generator=g) * 0.01
    return out


def lvis_like_classes(k: int) -> list[str]:
    return [f"class_{i:04d}" for i in range(k)]


def write_mmdet_checkpoint(path: Path, state: dict[str, torch.Tensor], config: str | None, *,
                           classes: list[str] | None = None, bare: bool = False) -> Path:
    """Save as MMDetection's ``save_checkpoint`` does (or a bare state dict)."""
    if bare:
        torch.save(state, path)
        return path
    meta: dict = {"mmdet_version": "2.8.0", "epoch": 24, "iter": 1000, "seed": 0}
    if config is not None:
        meta["config"] = config
    if classes is not None:
        meta["CLASSES"] = tuple(classes)
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
               path)
    return path
