"""Training and inference speed of our Mask R-CNN against stock torchvision, in one run.

For each setting (the synthetic CPU preset and R50-FPN at 1333x800) it measures, in separate
subprocesses so that peak memory is clean:

- ``stock``: ``torchvision.models.detection.maskrcnn_resnet50_fpn``-style MaskRCNN built with
  the same backbone, class count and RPN/RoI/test settings;
- ``ours (torchvision parity)``: our model with every parity switch on torchvision's side
  (``ParityConfig.torchvision()``, plain mask predictor), i.e. the same computation: the
  ratio measures what our wrapper costs;
- ``ours (original settings)``: our model as the LVIS configs build it (aligned RoIAlign,
  fixed anchor strides, grid-sample mask paste, L1 losses, normed mask predictor).

Images per second for a training step (forward + backward + SGD step) and for inference, and
peak resident memory. Runs alternate (A B A B ...) so that machine load affects all alike.

    python benchmarks/train_speed.py                  # both settings
    python benchmarks/train_speed.py --settings synthetic --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    # name: (backbone, fpn, image (h, w), classes, batch, train steps, infer images, overrides)
    "synthetic": dict(backbone="resnet18", fpn=64, size=(224, 224), classes=48, batch=4,
                      steps=6, infer=6, rpn=(600, 300, 300, 300), rois=128, rep=512,
                      mask_layers=[128, 128], dets=300),
    "r50_1333x800": dict(backbone="resnet50", fpn=256, size=(800, 1333), classes=1203, batch=2,
                         steps=2, infer=2, rpn=(2000, 1000, 1000, 1000), rois=512, rep=1024,
                         mask_layers=[256, 256, 256, 256], dets=300),
}
VARIANTS = ("stock", "ours_tv", "ours_orig")
LABELS = {"stock": "stock torchvision", "ours_tv": "ours (torchvision parity)",
          "ours_orig": "ours (original settings)"}


def _model(variant: str, s: dict):
    import torch
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.mask_rcnn import MaskRCNN

    from loce.config.model import ModelConfig, ParityConfig
    from loce.models import build_mask_rcnn

    pre_tr, post_tr, pre_te, post_te = s["rpn"]
    cfg = ModelConfig(backbone=s["backbone"], backbone_weights="none", fpn_channels=s["fpn"])
    cfg.rpn.pre_nms_top_n_train, cfg.rpn.post_nms_top_n_train = pre_tr, post_tr
    cfg.rpn.pre_nms_top_n_test, cfg.rpn.post_nms_top_n_test = pre_te, post_te
    cfg.roi.batch_size_per_image = s["rois"]
    cfg.roi.representation_size = s["rep"]
    cfg.mask.head_layers = list(s["mask_layers"])
    cfg.test.detections_per_img = s["dets"]
    if variant != "ours_orig":
        cfg.parity = ParityConfig.torchvision()
        cfg.mask.predictor = "plain"
        cfg.mask.select_channels = False
    model = build_mask_rcnn(cfg, s["classes"])
    if variant == "ours_tv":
        return model
    if variant == "stock":
        ours = model
        body = ours.backbone
        assert isinstance(body, BackboneWithFPN)
        stock = MaskRCNN(
            body, num_classes=None, min_size=s["size"][0], max_size=s["size"][1],
            rpn_pre_nms_top_n_train=pre_tr, rpn_post_nms_top_n_train=post_tr,
            rpn_pre_nms_top_n_test=pre_te, rpn_post_nms_top_n_test=post_te,
            box_batch_size_per_image=s["rois"], box_score_thresh=cfg.test.score_thresh,
            box_nms_thresh=cfg.test.nms_thresh, box_detections_per_img=s["dets"],
            box_head=ours.roi_heads.box_head, box_predictor=ours.roi_heads.box_predictor,
            mask_head=ours.roi_heads.mask_head,
            mask_predictor=torch.nn.Sequential(*ours.roi_heads.mask_predictor),
            rpn_anchor_generator=ours.rpn.anchor_generator, rpn_head=ours.rpn.head,
        )
        # images are passed at the target size, so the stock transform's resize is a no-op
        return stock
    return model


def _worker(setting: str, variant: str) -> dict:
    import resource

    import torch

    torch.manual_seed(0)
    s = SETTINGS[setting]
    model = _model(variant, s)
    h, w = s["size"]
    g = torch.Generator().manual_seed(1)

    def batch(n):
        images = [torch.rand(3, h, w, generator=g) for _ in range(n)]
        targets = []
        for _ in range(n):
            k = 6
            xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = 24 + torch.rand(k, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
            boxes = torch.cat([xy, xy + wh], 1)
            masks = torch.zeros(k, h, w, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            targets.append({"boxes": boxes, "labels": torch.randint(1, s["classes"] + 1, (k,),
                                                                     generator=g),
                            "masks": masks})
        return images, targets

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    model.train()
    times = []
    for i in range(s["steps"] + 1):
        images, targets = batch(s["batch"])
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i > 0:  # first step warms up allocators and caches
            times.append(time.perf_counter() - t0)
    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(s["infer"] + 1):
            images, _ = batch(1)
            t0 = time.perf_counter()
            model(images)
            if i > 0:
                infer.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"train_step_s": statistics.median(times), "batch": s["batch"],
            "infer_s": statistics.median(infer), "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/train_speed.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(_worker(*args.worker)))
        return
    import torch

    report = {"torch": torch.__version__, "threads": args.threads, "device": "cpu", "results": {}}
    for setting in args.settings:
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                out = subprocess.run([sys.executable, __file__, "--worker", setting, variant,
                                      "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True)
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows = {}
        for variant, rs in runs.items():
            step = statistics.median(r["train_step_s"] for r in rs)
            inf = statistics.median(r["infer_s"] for r in rs)
            rows[variant] = {"train_img_per_s": rs[0]["batch"] / step, "infer_img_per_s": 1 / inf,
                             "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
        base = rows["stock"]
        for row in rows.values():
            row["train_ratio_vs_stock"] = row["train_img_per_s"] / base["train_img_per_s"]
            row["infer_ratio_vs_stock"] = row["infer_img_per_s"] / base["infer_img_per_s"]
        report["results"][setting] = rows
        print(f"\n{setting}  (CPU, {args.threads} threads, median of {args.repeats} alternating runs)")
        print(f"{'variant':<28}{'train img/s':>12}{'ratio':>7}{'infer img/s':>13}{'ratio':>7}"
              f"{'peak RSS MB':>13}")
        for variant, row in rows.items():
            print(f"{LABELS[variant]:<28}{row['train_img_per_s']:>12.3f}"
                  f"{row['train_ratio_vs_stock']:>7.3f}{row['infer_img_per_s']:>13.3f}"
                  f"{row['infer_ratio_vs_stock']:>7.3f}{row['peak_rss_mb']:>13.0f}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
