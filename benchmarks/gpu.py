"""GPU benchmark: training and inference speed and memory of the LVIS recipe on one GPU.

One command for the first machine with a GPU (under 8 minutes on one GPU); writes
``benchmarks/results/gpu.json``. Random weights and synthetic images of LVIS size
(1333 x 800, six boxes with box-shaped masks each); nothing is downloaded. Measured:

- ``stage1``: training steps (forward, backward, SGD step) of the LVIS v1 R50-FPN stage-1
  config (``mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1``, 1,203 classes) at 2 images per
  step, in fp32, bf16 AMP and fp16 AMP (with a gradient scaler), against stock torchvision
  ``maskrcnn_resnet50_fpn`` with the same number of classes, image size, RPN and RoI settings,
  in the same run: images per second and peak GPU memory;
- ``stage2``: the LOCE fine-tune step (``loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1``,
  feature memory on the GPU: ``loce.memory_device=model``) against the cross-entropy
  fine-tune step with the same trainable layers (``loce.enabled=false``);
- ``inference``: images per second at the LVIS test settings (300 detections, score > 1e-4)
  with and without the mask branch;
- ``ddp``: the stage-1 step in a one-process NCCL DistributedDataParallel group.

On a machine without CUDA it says so in one line and exits 0. ``--device cpu --smoke`` runs a
few steps of the same cases with the synthetic preset (ResNet-18-FPN, 224 px, 48 classes) on
the CPU, fp32 only, DDP on gloo, so that the script is exercised by the tests.

    python benchmarks/gpu.py                        # on a GPU machine
    python benchmarks/gpu.py --device cpu --smoke --out /tmp/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

LVIS_STAGE1 = "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
LVIS_STAGE2 = "loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
SMOKE_STAGE1 = "mask_rcnn_r18_fpn_normed_mask_synthetic"
SMOKE_STAGE2 = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
# Smaller still for the smoke run: it only has to exercise every case.
SMOKE_SETTINGS = ["model.rpn.pre_nms_top_n_train=100", "model.rpn.post_nms_top_n_train=50",
                  "model.rpn.pre_nms_top_n_test=50", "model.rpn.post_nms_top_n_test=50",
                  "model.roi.batch_size_per_image=32", "model.test.detections_per_img=10",
                  "loce.memory_capacity=16"]  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} GB"


def _peak_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def _config(name: str, extra: list[str]):
    from loce.config import load_config

    return load_config(name, ["model.backbone_weights=none", *extra])


def _ours(cfg, num_classes: int, device: torch.device) -> torch.nn.Module:
    from loce import build
    from loce.engine.freeze import configure_trainable

    model = build.build_model(cfg, num_classes, load_backbone=False)
    configure_trainable(model, cfg)
    return model.to(device)


def _stock(cfg, num_classes: int, size: tuple[int, int], device: torch.device) -> torch.nn.Module:
    """Stock torchvision Mask R-CNN with the config's backbone, RPN, RoI and test settings."""
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    m = cfg.model
    kwargs = dict(
        min_size=size[0], max_size=size[1],
        rpn_pre_nms_top_n_train=m.rpn.pre_nms_top_n_train,
        rpn_post_nms_top_n_train=m.rpn.post_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_test=m.rpn.post_nms_top_n_test,
        box_batch_size_per_image=m.roi.batch_size_per_image,
        box_score_thresh=m.test.score_thresh, box_nms_thresh=m.test.nms_thresh,
        box_detections_per_img=m.test.detections_per_img,
    )  # fmt: skip
    if m.backbone == "resnet50":
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                      num_classes=num_classes + 1, **kwargs)  # fmt: skip
    else:
        backbone = resnet_fpn_backbone(backbone_name=m.backbone, weights=None,
                                       trainable_layers=5)  # fmt: skip
        model = MaskRCNN(backbone, num_classes=num_classes + 1, **kwargs)
    return model.to(device)


class Batches:
    """Synthetic images of one size with six box objects each (box-shaped masks)."""

    def __init__(self, size: tuple[int, int], num_classes: int, device: torch.device) -> None:
        self.h, self.w = size
        self.num_classes = num_classes
        self.device = device
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, n: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        h, w, g = self.h, self.w, self.gen
        images, targets = [], []
        for _ in range(n):
            images.append(torch.rand(3, h, w, generator=g).to(self.device))
            xy = torch.rand(6, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = 24 + torch.rand(6, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
            boxes = torch.cat([xy, xy + wh], 1)
            masks = torch.zeros(6, h, w, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            labels = torch.randint(1, self.num_classes + 1, (6,), generator=g)
            targets.append({"boxes": boxes.to(self.device), "labels": labels.to(self.device),
                            "masks": masks.to(self.device)})  # fmt: skip
        return images, targets


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_steps(model, batches: Batches, device: torch.device, *, precision: str, steps: int,
                batch: int, warmup: int) -> dict[str, Any]:  # fmt: skip
    """Median step time over ``steps`` after ``warmup`` steps; images/s and peak memory."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    model.train()
    _reset_memory(device)
    times = []
    for i in range(warmup + steps):
        images, targets = batches(batch)
        _sync(device)
        t0 = time.perf_counter()
        with _autocast(device, precision):
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"precision": precision, "images_per_step": batch, "step_s": step,
            "images_per_s": batch / step, "peak_gpu_gb": _peak_gb(device),
            "loss_finite": bool(torch.isfinite(loss).item())}  # fmt: skip


@torch.no_grad()
def inference(model, batches: Batches, device: torch.device, *, masks: bool, images: int,
              warmup: int) -> dict[str, Any]:  # fmt: skip
    heads = model.roi_heads
    saved = getattr(heads, "infer_masks", None)
    if saved is not None:
        heads.infer_masks = masks
    model.eval()
    _reset_memory(device)
    times = []
    for i in range(warmup + images):
        batch, _ = batches(1)
        _sync(device)
        t0 = time.perf_counter()
        model(batch)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if saved is not None:
        heads.infer_masks = saved
    per_image = statistics.median(times)
    return {"masks": masks, "images_per_s": 1 / per_image, "peak_gpu_gb": _peak_gb(device)}


def ddp_step(cfg, num_classes: int, batches: Batches, device: torch.device, *, steps: int,
             batch: int, warmup: int) -> dict[str, Any]:  # fmt: skip
    """The stage-1 step inside a one-process DistributedDataParallel group."""
    import torch.distributed as dist


    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model = _ours(cfg, num_classes, device)
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None,
            find_unused_parameters=False,
        )  # fmt: skip
        out = train_steps(ddp, batches, device, precision="fp32", steps=steps, batch=batch,
                          warmup=warmup)  # fmt: skip
        out["backend"] = backend
        del ddp, model
    finally:
        dist.destroy_process_group()
    return out


def run(device: torch.device, smoke: bool) -> dict[str, Any]:
    stage1, stage2 = (SMOKE_STAGE1, SMOKE_STAGE2) if smoke else (LVIS_STAGE1, LVIS_STAGE2)
    size = (128, 128) if smoke else (800, 1333)
    num_classes = 48 if smoke else 1203
    steps, warmup, infer = (1, 1, 1) if smoke else (10, 3, 20)
    settings = SMOKE_SETTINGS if smoke else []
    batch = 2
    precisions = ["fp32"] if device.type == "cpu" else ["fp32", "bf16", "fp16"]
    batches = Batches(size, num_classes, device)
    out: dict[str, Any] = {"stage1": [], "stage2": [], "inference": []}
    # Images are given at the target size; the test-time settings are the config's.
    cfg1 = _config(stage1, settings)
    for precision in precisions:
        for impl in ("loce", "torchvision"):
            torch.manual_seed(0)
            model = (_ours(cfg1, num_classes, device) if impl == "loce"
                     else _stock(cfg1, num_classes, size, device))  # fmt: skip
            row = train_steps(model, batches, device, precision=precision, steps=steps,
                              batch=batch, warmup=warmup)  # fmt: skip
            out["stage1"].append({"impl": impl, **row})
            print(f"stage1 {impl:<11} {precision}: {row['images_per_s']:.2f} images/s, peak "
                  f"{_gb(row['peak_gpu_gb'])}", flush=True)  # fmt: skip
            del model
    for name, extra in (("loce", ["loce.memory_device=model"]), ("ce", ["loce.enabled=false"])):
        torch.manual_seed(0)
        cfg2 = _config(stage2, ["train.init_from=null", *settings, *extra])
        model = _ours(cfg2, num_classes, device)
        row = train_steps(model, batches, device, precision="fp32", steps=steps, batch=batch,
                          warmup=warmup)  # fmt: skip
        memory = getattr(model.roi_heads, "feature_memory", None)
        if memory is not None:
            row["feature_memory_gb"] = memory.nbytes / 1e9
            row["feature_memory_device"] = str(memory.device)
        out["stage2"].append({"fine_tune": name, **row})
        print(f"stage2 {name:<4}: {row['images_per_s']:.2f} images/s, peak "
              f"{_gb(row['peak_gpu_gb'])}", flush=True)  # fmt: skip
        del model
    torch.manual_seed(0)
    model = _ours(cfg1, num_classes, device)
    for masks in (True, False):
        row = inference(model, batches, device, masks=masks, images=infer, warmup=warmup)
        out["inference"].append(row)
        print(f"inference masks={masks}: {row['images_per_s']:.2f} images/s", flush=True)
    del model
    out["ddp"] = ddp_step(cfg1, num_classes, batches, device, steps=steps, batch=batch,
                          warmup=warmup)  # fmt: skip
    print(f"ddp ({out['ddp']['backend']}): {out['ddp']['images_per_s']:.2f} images/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps of the synthetic preset (ResNet-18-FPN, 224 px)")  # fmt: skip
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "gpu.json")  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device on this machine; nothing measured (run it "
              "where a GPU is, or --device cpu --smoke to exercise it).")  # fmt: skip
        return 0
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    if args.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # steadier on a shared CPU; the smoke run measures nothing
    start = time.perf_counter()
    results = run(device, args.smoke)
    payload = {
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else platform.processor() or "cpu",
                    "torch": torch.__version__, "python": platform.python_version(),
                    "cuda": torch.version.cuda},
        "smoke": args.smoke,
        "seconds": time.perf_counter() - start,
        **results,
    }  # fmt: skip
    from loce.fileio import atomic_write_json

    atomic_write_json(args.out, payload)
    print(f"wrote {args.out} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
