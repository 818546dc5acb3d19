"""Peak memory and time of the class-specific mask predictor: all K+1 channels vs only the
channel each RoI needs, at LVIS scale (K = 1203, R = 256 RoIs by default).

For each predictor ("normed", "plain") and path ("full": ``[R, K+1, 28, 28]`` logits then
the RoI's channel; "selected": only that channel), in training (forward, binary
cross-entropy, backward) and inference (forward, sigmoid). Each case runs in its own
process so that its peak resident memory can be read (``ru_maxrss`` minus the resident size
after setup); on CUDA the peak allocated memory is used instead. Both paths are also checked
to give the same loss / probabilities.

Prints one JSON object (and writes it with ``--out``).

    python benchmarks/mask_head_memory.py [--classes 1203] [--rois 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from loce.models.predictors import MaskPredictor, NormedMaskPredictor


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _setup(predictor: str, classes: int, rois: int, device: str):
    torch.manual_seed(0)
    cls = NormedMaskPredictor if predictor == "normed" else MaskPredictor
    model = cls(256, 256, classes + 1).to(device)
    x = torch.randn(rois, 256, 14, 14, device=device)
    labels = torch.randint(1, classes + 1, (rois,), device=device)
    target = (torch.rand(rois, 28, 28, device=device) > 0.5).float()
    return model, x, labels, target


def _run(model, x, labels, target, path: str, mode: str):
    if mode == "train":
        model.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        if path == "full":
            logits = model(xg)[torch.arange(len(labels), device=x.device), labels]
        else:
            logits = model(xg, labels)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        return loss.detach()
    with torch.no_grad():
        if path == "full":
            probs = model(x).sigmoid()[torch.arange(len(labels), device=x.device), labels]
        else:
            probs = model(x, labels)[:, 0].sigmoid()
    return probs


def worker(args) -> dict:
    torch.set_num_threads(args.threads)
    device = args.device
    model, x, labels, target = _setup(args.predictor, args.classes, args.rois, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    out = _run(model, x, labels, target, args.path, args.mode)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        _run(model, x, labels, target, args.path, args.mode)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    checksum = float(out.double().sum()) if out.dim() else float(out)
    return {"peak_mb": round(peak, 1), "time_s": round(statistics.median(times), 4),
            "value": checksum}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1203)
    parser.add_argument("--rois", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    # Internal: run one case in this process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--predictor", default="normed", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args)
        print(json.dumps(result))
        return result

    report: dict = {"classes": args.classes, "rois": args.rois, "device": args.device,
                    "threads": args.threads, "cases": {}}
    common = ["--classes", str(args.classes), "--rois", str(args.rois), "--device", args.device,
              "--threads", str(args.threads), "--repeat", str(args.repeat)]
    for predictor in ("normed", "plain"):
        for mode in ("train", "inference"):
            runs = {}
            for path in ("full", "selected"):
                cmd = [sys.executable, __file__, "--worker", "--predictor", predictor, "--path", path,
                       "--mode", mode, *common]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[path] = json.loads(proc.stdout.strip().splitlines()[-1])
            full, sel = runs["full"], runs["selected"]
            report["cases"][f"{predictor}/{mode}"] = {
                "full_peak_mb": full["peak_mb"],
                "selected_peak_mb": sel["peak_mb"],
                "memory_ratio": round(sel["peak_mb"] / max(full["peak_mb"], 1e-9), 3),
                "full_s": full["time_s"],
                "selected_s": sel["time_s"],
                "same_result": abs(full["value"] - sel["value"]) <= 1e-4 * max(1.0, abs(full["value"])),
            }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
