"""Helpers shared by the engine tests (importable because pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(dataset: Path, output_dir: Path, **extra) -> list[str]:
    """Overrides that shrink the synthetic preset to a few-second run on the CPU."""
    values = {
        "data.train_ann": str(dataset / "annotations/train.json"),
        "data.train_images": str(dataset),
        "data.val_ann": str(dataset / "annotations/val.json"),
        "data.val_images": str(dataset),
        "data.train_scales": "[112,128]",
        "data.max_size": 160,
        "data.test_scale": 128,
        "data.test_max_size": 160,
        "data.images_per_gpu": 2,
        "data.workers": 0,
        "model.rpn.pre_nms_top_n_train": 100,
        "model.rpn.post_nms_top_n_train": 50,
        "model.rpn.pre_nms_top_n_test": 50,
        "model.rpn.post_nms_top_n_test": 50,
        "model.roi.batch_size_per_image": 32,
        "model.roi.representation_size": 64,
        "model.mask.head_layers": "[16]",
        "model.test.detections_per_img": 50,
        "solver.lr": 0.01,
        "solver.epochs": 1,
        "solver.steps": "[]",
        "solver.warmup_iters": 2,
        "train.output_dir": str(output_dir),
        "train.log_every_iters": 1,
        "train.threads": 1,
        "train.eval_at_end": False,
        "train.max_iters_per_epoch": 3,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


SYNTH_CONFIG = "mask_rcnn_r18_fpn_normed_mask_synthetic"


def logged_losses(path: Path) -> dict[int, dict[str, float]]:
    """The losses of each global iteration in a run's ``metrics.jsonl`` (the last line wins)."""
    import json

    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "train":
            out[rec["global_iter"]] = {k: v for k, v in rec.items() if k.startswith("loss")}
    return out


def train_command(config: str, overrides: list[str], *extra: str) -> list[str]:
    """``python -m loce train CONFIG --set ...`` as an argument list for a subprocess."""
    import sys

    cmd = [sys.executable, "-m", "loce", "train", config, *extra]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a process group's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_rank_env(rank: int, world: int, port: int) -> None:
    """Set what torchrun sets for one rank of a job of ``world`` processes on this machine."""
    import os

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})


def spawn_ranks(fn, args: tuple, world: int = 2, timeout: float = 300) -> None:
    """Run ``fn(rank, *args)`` in ``world`` spawned processes; fail (and kill them) when they
    are not all done within ``timeout`` seconds, so a hang is a failure, not a stuck suite."""
    import time

    import torch.multiprocessing as mp

    ctx = mp.start_processes(fn, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise AssertionError(f"{world} processes not done after {timeout:.0f} s: a rank hung")


def json_class_statistics(path: Path) -> dict:
    """The class statistics of an LVIS training file, counted here from its json: per class
    (categories in id order) the images and instances of its non-crowd boxes, the images with
    one at least, and the fractal dimensions of the box centres divided by the image size."""
    import json

    import numpy as np

    from loce.data.statistics import fractal_dimensions

    data = json.loads(Path(path).read_text())
    size = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    cat_ids = sorted(c["id"] for c in data["categories"])
    label = {c: i + 1 for i, c in enumerate(cat_ids)}
    anns = [a for a in data["annotations"] if not a.get("iscrowd")]
    images_of: dict[int, set] = {c: set() for c in cat_ids}
    for a in anns:
        images_of[a["category_id"]].add(a["image_id"])
    cx = np.asarray([(a["bbox"][0] + a["bbox"][2] / 2) / size[a["image_id"]][0] for a in anns])
    cy = np.asarray([(a["bbox"][1] + a["bbox"][3] / 2) / size[a["image_id"]][1] for a in anns])
    labels = np.asarray([label[a["category_id"]] for a in anns])
    return {
        "image_counts": [len(images_of[c]) for c in cat_ids],
        "instance_counts": [sum(a["category_id"] == c for a in anns) for c in cat_ids],
        "num_images": len({a["image_id"] for a in anns}),
        "fractal_dims": fractal_dimensions(cx, cy, labels, len(cat_ids)).tolist(),
    }
