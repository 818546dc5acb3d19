"""GPU benchmark: training and inference speed and memory of the LVIS recipe, like with like.

One command for the first machine with a GPU (under 8 minutes on one GPU); writes
``benchmarks/results/gpu.json``. Random weights, synthetic training images of LVIS size
(1333 x 800, six boxes with box-shaped masks each) and generated JPEGs of the LVIS v0.5
validation sizes for inference; nothing is downloaded. Measured:

- ``stage1``: training steps (forward, backward, SGD step) of the LVIS v1 R50-FPN stage-1
  config (``mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1``, 1,203 classes) at 2 images per
  step, in fp32, bf16 AMP and fp16 AMP (with a gradient scaler), against stock torchvision
  Mask R-CNN with the same backbone, classes, image size, RPN and RoI settings, its ResNet
  in ``FrozenBatchNorm2d`` with the same trainable stages (``model.frozen_stages``), in the
  same run: images per second and peak GPU memory;
- ``stage2``: the LOCE fine-tune step (``loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1``)
  after the initialisation pass, i.e. with every class queue of the feature memory full (the
  queues are filled with random features, the state the pass leaves), in fp32, bf16 and
  fp16, the memory on the host (``loce.memory_device=cpu``) and on the GPU (``model``),
  against the cross-entropy fine-tune step with the same trainable layers
  (``loce.enabled=false``);
- ``inference``: images per second end to end as ``loce test`` runs it
  (:func:`loce.engine.evaluate.predict_to_file`: JPEG decode and resize in DataLoader
  workers, the model, mask paste, RLE on a thread, the results file), with and without
  masks, at the LVIS test settings (300 detections, score > 1e-4). The classifier's logits
  are rescaled so that scores are peaked like a trained model's (about
  ``PAIRS_PER_ROI`` (proposal, class) pairs per proposal above the score threshold,
  instead of all 1,203 with random weights); the pairs per image are reported;
- ``ddp``: the stage-1 step in DistributedDataParallel over every visible GPU (NCCL), one
  process per GPU: images per second of the whole group.

Under bf16 and fp16 the anchors, the proposals that enter the RoI heads and the detections'
boxes are checked to be float32 (``box_dtypes``); the run fails if one is not.

On a machine without CUDA it says so in one line and exits 0. ``--device cpu --smoke`` runs a
few steps of the same cases with the synthetic preset (ResNet-18-FPN, 128 px, 48 classes) on
the CPU, fp32 and bf16 (CPU autocast) for the LOCE step, DDP in two gloo processes, so that
the script is exercised by the tests.

    python benchmarks/gpu.py                        # on a GPU machine
    python benchmarks/gpu.py --device cpu --smoke --out /tmp/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_speed import ANN, make_images  # noqa: E402  (the generated LVIS validation JPEGs)

LVIS_STAGE1 = "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
LVIS_STAGE2 = "loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
SMOKE_STAGE1 = "mask_rcnn_r18_fpn_normed_mask_synthetic"
SMOKE_STAGE2 = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
# Smaller still for the smoke run: it only has to exercise every case.
SMOKE_SETTINGS = ["model.rpn.pre_nms_top_n_train=100", "model.rpn.post_nms_top_n_train=50",
                  "model.rpn.pre_nms_top_n_test=50", "model.rpn.post_nms_top_n_test=50",
                  "model.roi.batch_size_per_image=32", "model.test.detections_per_img=10",
                  "loce.memory_capacity=16", "data.test_scale=128", "data.test_max_size=192"]  # fmt: skip
# (proposal, class) pairs per proposal above the score threshold after the logits are peaked.
PAIRS_PER_ROI = 10.0
FLOAT32 = "torch.float32"


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
    """Stock torchvision Mask R-CNN with the config's backbone, RPN, RoI and test settings, its
    ResNet in ``FrozenBatchNorm2d`` with the config's trainable stages (``frozen_stages`` 1:
    stem and layer1 frozen, layer2-4 trained, torchvision's ``trainable_layers=3``)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    m = cfg.model
    trainable = 5 if m.frozen_stages < 0 else 4 - m.frozen_stages
    backbone = resnet_fpn_backbone(backbone_name=m.backbone, weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=trainable)  # fmt: skip
    model = MaskRCNN(
        backbone, num_classes=num_classes + 1,
        min_size=size[0], max_size=size[1],
        rpn_pre_nms_top_n_train=m.rpn.pre_nms_top_n_train,
        rpn_post_nms_top_n_train=m.rpn.post_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_test=m.rpn.post_nms_top_n_test,
        box_batch_size_per_image=m.roi.batch_size_per_image,
        box_score_thresh=m.test.score_thresh, box_nms_thresh=m.test.nms_thresh,
        box_detections_per_img=m.test.detections_per_img,
    )  # fmt: skip
    return model.to(device)


class Batches:
    """Synthetic images of one size with six box objects each (box-shaped masks)."""

    def __init__(self, size: tuple[int, int], num_classes: int, device: torch.device,
                 seed: int = 0) -> None:  # fmt: skip
        self.h, self.w = size
        self.num_classes = num_classes
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)

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


class BoxDtypes:
    """Records the dtypes of the anchors, of the proposals entering the RoI heads and of the
    detections' boxes while attached to a model (torchvision's module names)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seen: dict[str, set[str]] = {"anchors": set(), "proposals": set(), "detections": set()}
        inner = getattr(model, "module", model)
        self.handles = [
            inner.rpn.anchor_generator.register_forward_hook(self._anchors),
            inner.roi_heads.register_forward_pre_hook(self._proposals),
            inner.register_forward_hook(self._detections),
        ]  # fmt: skip

    def _anchors(self, module, args, out) -> None:
        self.seen["anchors"].update(str(a.dtype) for a in out)

    def _proposals(self, module, args) -> None:
        self.seen["proposals"].update(str(p.dtype) for p in args[1])

    def _detections(self, module, args, out) -> None:
        if isinstance(out, list):  # eval mode: per-image dicts
            self.seen["detections"].update(str(d["boxes"].dtype) for d in out)

    def close(self) -> dict[str, list[str]]:
        """Detach; the dtypes seen, each a sorted list."""
        for h in self.handles:
            h.remove()
        return {k: sorted(v) for k, v in self.seen.items() if v}


def _check_float32(box_dtypes: dict[str, list[str]], what: str) -> None:
    wrong = {k: v for k, v in box_dtypes.items() if v != [FLOAT32]}
    if wrong:
        raise AssertionError(f"{what}: box geometry not in float32 under AMP: {wrong}")


def train_steps(model, batches: Batches, device: torch.device, *, precision: str, steps: int,
                batch: int, warmup: int) -> dict[str, Any]:  # fmt: skip
    """Median step time over ``steps`` after ``warmup`` steps; images/s and peak memory."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    model.train()
    dtypes = BoxDtypes(model)
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
            "loss_finite": bool(torch.isfinite(loss).item()), "box_dtypes": dtypes.close()}  # fmt: skip


def fill_memory(model, device: torch.device, chunk_classes: int = 64) -> dict[str, Any]:
    """Every class queue of LOCE's feature memory full of random features, as after the
    initialisation pass; returns its size and place."""
    heads = model.roi_heads
    memory = heads.memory_for(device)
    k, q = heads.num_classes, heads.memory_capacity
    g = torch.Generator(device=memory.device).manual_seed(0)
    for lo in range(1, k + 1, chunk_classes):
        labels = torch.arange(lo, min(lo + chunk_classes, k + 1), device=memory.device)
        labels = labels.repeat_interleave(q)
        feats = torch.randn(labels.numel(), *heads.feature_shape, generator=g,
                            device=memory.device).abs_()  # post-ReLU features  # fmt: skip
        deltas = torch.randn(labels.numel(), 4, generator=g, device=memory.device) * 0.1
        memory.push(feats, labels, deltas)
    assert memory.is_full, "the feature memory should be full after filling every class"
    return {"feature_memory_gb": memory.nbytes / 1e9, "feature_memory_device": str(memory.device),
            "feature_memory_full": True}  # fmt: skip


class PeakedScores(torch.nn.Module):
    """The classifier's logits times ``scale``: a random-weight model's near-uniform softmax
    made peaked like a trained model's."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.scale = 1.0
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x) * self.scale
        self.last = logits.detach()
        return logits


def _pairs_per_roi(logits: torch.Tensor, thresh: float) -> float:
    """Mean foreground classes per proposal whose softmax score exceeds ``thresh``."""
    probs = torch.softmax(logits.float(), -1)[:, 1:]
    return (probs > thresh).sum(1).float().mean().item()


def peak_scores(model, image: torch.Tensor, thresh: float) -> dict[str, float]:
    """Wrap the box classifier in :class:`PeakedScores` and pick its scale (bisection on one
    image's logits) so that about ``PAIRS_PER_ROI`` classes per proposal pass ``thresh``."""
    predictor = model.roi_heads.box_predictor
    peaked = PeakedScores(predictor.cls_score)
    predictor.cls_score = peaked
    model.eval()
    with torch.no_grad():
        model([image])
    logits = peaked.last
    lo, hi = 1.0, 1e4
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        if _pairs_per_roi(logits * mid, thresh) > PAIRS_PER_ROI:
            lo = mid
        else:
            hi = mid
    peaked.scale = hi
    scaled = logits * hi
    top = torch.softmax(scaled.float(), -1)[:, 1:].max(1).values
    return {"logit_scale": hi, "pairs_per_roi": _pairs_per_roi(scaled, thresh),
            "pairs_per_roi_random_weights": _pairs_per_roi(logits, thresh),
            "median_top_score": top.median().item()}  # fmt: skip


def val_dataset(cfg, root: Path, images: int):
    """The first ``images`` LVIS v0.5 validation images (generated JPEGs of their sizes)."""
    from loce import build

    data = json.loads(ANN.read_text())
    keep = data["images"][:images]
    ids = {i["id"] for i in keep}
    data["images"] = keep
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    ann = root / "val.json"
    ann.write_text(json.dumps(data))
    make_images(ann, root)
    cfg.data.val_ann, cfg.data.val_images = str(ann), str(root)
    return build.build_val_dataset(cfg)


def inference(model, dataset, device: torch.device, *, masks: bool, images: int, warmup: int,
              precision: str, workers: int, batch_size: int, out: Path) -> dict[str, Any]:  # fmt: skip
    """``loce test``'s per-process work on ``images`` images after ``warmup`` images."""
    from loce.engine.evaluate import predict_to_file

    dtypes = BoxDtypes(model)
    with _autocast(device, precision):
        predict_to_file(model, dataset, out, device=device, indices=range(warmup),
                        with_masks=masks, workers=workers, batch_size=batch_size, progress=False)  # fmt: skip
        _reset_memory(device)
        _sync(device)
        t0 = time.perf_counter()
        written = predict_to_file(model, dataset, out, device=device,
                                  indices=range(warmup, warmup + images), with_masks=masks,
                                  workers=workers, batch_size=batch_size, progress=False)  # fmt: skip
        _sync(device)
    seconds = time.perf_counter() - t0
    return {"masks": masks, "precision": precision, "images": images, "seconds": seconds,
            "images_per_s": images / seconds, "results_per_image": written / images,
            "peak_gpu_gb": _peak_gb(device), "box_dtypes": dtypes.close()}  # fmt: skip


def _ddp_worker(rank: int, world: int, device_type: str, port: int, cfg, num_classes: int,
                size: tuple[int, int], steps: int, batch: int, warmup: int, out: str) -> None:  # fmt: skip
    """One process of the DDP group: the stage-1 step; rank 0 writes the result to ``out``."""
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        torch.manual_seed(0)  # the same initial weights on every rank
        model = _ours(cfg, num_classes, device)
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False, find_unused_parameters=False,
        )  # fmt: skip
        row = train_steps(ddp, Batches(size, num_classes, device, seed=rank), device,
                          precision="fp32", steps=steps, batch=batch, warmup=warmup)  # fmt: skip
        # the group's pace is its slowest rank's
        step = torch.tensor([row["step_s"]], dtype=torch.float64, device=device)
        dist.all_reduce(step, op=dist.ReduceOp.MAX)
        if rank == 0:
            row.update(step_s=step.item(), images_per_step=batch * world,
                       images_per_s=batch * world / step.item(), backend=backend,
                       world_size=world)  # fmt: skip
            Path(out).write_text(json.dumps(row))
    finally:
        dist.destroy_process_group()


def ddp_step(cfg, num_classes: int, size: tuple[int, int], device: torch.device, *, steps: int,
             batch: int, warmup: int) -> dict[str, Any]:  # fmt: skip
    """The stage-1 step in DistributedDataParallel over every visible GPU (two gloo processes
    on the CPU)."""
    import socket

    import torch.multiprocessing as mp

    world = torch.cuda.device_count() if device.type == "cuda" else 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="loce_gpu_ddp_") as tmp:
        out = Path(tmp) / "ddp.json"
        mp.spawn(_ddp_worker, args=(world, device.type, port, cfg, num_classes, size, steps,
                                    batch, warmup, str(out)), nprocs=world, join=True)  # fmt: skip
        return json.loads(out.read_text())


def run(device: torch.device, smoke: bool) -> dict[str, Any]:
    stage1, stage2 = (SMOKE_STAGE1, SMOKE_STAGE2) if smoke else (LVIS_STAGE1, LVIS_STAGE2)
    size = (128, 128) if smoke else (800, 1333)
    num_classes = 48 if smoke else 1203
    # (timed steps, untimed steps first, timed images): the smoke run times nothing it keeps
    steps, warmup, infer = (1, 0, 2) if smoke else (10, 3, 20)
    settings = SMOKE_SETTINGS if smoke else []
    batch = 2
    on_gpu = device.type == "cuda"
    precisions = ["fp32", "bf16", "fp16"] if on_gpu else ["fp32"]
    # CPU autocast has CUDA's dtype rules: the smoke run checks the box dtypes under bf16 too.
    loce_precisions = precisions if on_gpu else ["fp32", "bf16"]
    memory_places = ["cpu", "model"] if on_gpu else ["cpu"]
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
            if impl == "loce" and precision != "fp32":
                _check_float32(row["box_dtypes"], f"stage1 {precision}")
            out["stage1"].append({"impl": impl, **row})
            print(f"stage1 {impl:<11} {precision}: {row['images_per_s']:.2f} images/s, peak "
                  f"{_gb(row['peak_gpu_gb'])}", flush=True)  # fmt: skip
            del model
    cases = [("loce", p, ["loce.memory_device=" + m]) for p in loce_precisions for m in memory_places]
    cases += [("ce", p, ["loce.enabled=false"]) for p in precisions]
    for name, precision, extra in cases:
        torch.manual_seed(0)
        cfg2 = _config(stage2, ["train.init_from=null", *settings, *extra])
        model = _ours(cfg2, num_classes, device)
        memory = fill_memory(model, device) if name == "loce" else {}
        row = train_steps(model, batches, device, precision=precision, steps=steps, batch=batch,
                          warmup=warmup)  # fmt: skip
        if precision != "fp32":
            _check_float32(row["box_dtypes"], f"stage2 {name} {precision}")
        out["stage2"].append({"fine_tune": name, **memory, **row})
        where = f" memory on {memory['feature_memory_device']}" if memory else ""
        print(f"stage2 {name:<4} {precision}{where}: {row['images_per_s']:.2f} images/s, peak "
              f"{_gb(row['peak_gpu_gb'])}", flush=True)  # fmt: skip
        del model
    torch.manual_seed(0)
    model = _ours(cfg1, num_classes, device)
    workers = 1 if smoke else min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="loce_gpu_infer_") as tmp:
        dataset = val_dataset(cfg1, Path(tmp), infer + max(1, warmup))
        first, _ = dataset[0]
        scores = peak_scores(model, first.to(device), cfg1.model.test.score_thresh)
        out["scores"] = scores
        print(f"scores: logits x {scores['logit_scale']:.1f}: {scores['pairs_per_roi']:.1f} "
              f"classes per proposal above the threshold (random weights: "
              f"{scores['pairs_per_roi_random_weights']:.0f}), median top score "
              f"{scores['median_top_score']:.2f}", flush=True)  # fmt: skip
        for precision in precisions:
            for masks in (True, False):
                row = inference(model, dataset, device, masks=masks, images=infer,
                                warmup=max(1, warmup), precision=precision, workers=workers,
                                batch_size=cfg1.eval.images_per_gpu,
                                out=Path(tmp) / "results.json")  # fmt: skip
                if precision != "fp32":
                    _check_float32(row["box_dtypes"], f"inference {precision}")
                out["inference"].append(row)
                print(f"inference {precision} masks={masks}: {row['images_per_s']:.2f} images/s, "
                      f"{row['results_per_image']:.0f} results per image", flush=True)  # fmt: skip
    del model
    out["ddp"] = ddp_step(cfg1, num_classes, size, device, steps=steps, batch=batch,
                          warmup=warmup)  # fmt: skip
    print(f"ddp ({out['ddp']['backend']}, {out['ddp']['world_size']} processes): "
          f"{out['ddp']['images_per_s']:.2f} images/s", flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps of the synthetic preset (ResNet-18-FPN, 128 px)")  # fmt: skip
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
                    "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
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
