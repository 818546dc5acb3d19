"""Inference over a dataset, LVIS result files, and evaluation; one process or many.

Each rank runs the model on its share of the images (every ``world``-th image) and streams
its detections to ``predictions.rank{R}.json`` in its own copy of the output folder; the
shards then travel to rank 0 over the process group, a block at a time
(:func:`loce.engine.distributed.gather_files`), so the ranks need no shared disk (several
nodes, each with its own), and rank 0 concatenates them into ``predictions.json`` (streaming,
shard by shard) and evaluates it with the LVIS protocol. No process ever holds every rank's
detections in memory.

Result dicts follow the LVIS format: ``image_id``, ``category_id``, ``score``, ``bbox``
``[x, y, w, h]`` in original-image pixels (``w = x2 - x1``, no +1), and for masks
``segmentation`` = compressed RLE with ``counts`` as a str; a mask's score is its box's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loce.engine import distributed as dist_utils
from loce.fileio import atomic_write, atomic_write_json, ensure_directory

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")

__all__ = [
    "METRIC_KEYS",
    "detections_to_host",
    "detections_to_results",
    "host_detections_to_results",
    "mask_crops",
    "evaluate",
    "merge_result_shards",
    "predict_to_file",
]


def mask_crops(masks: torch.Tensor) -> list[tuple[int, int, np.ndarray]]:
    """Each mask cut to the rows and columns it covers, then copied to the host at once.

    Only the crops cross to the host (one copy for all), not ``n x H x W`` booleans.

    Args:
        masks: ``[n, 1, H, W]`` (or ``[n, H, W]``) bool, or float probabilities
            (foreground ``>= 0.5``), on any device.

    Returns:
        n ``(top, left, crop [h, w] bool)``; an empty mask gives a ``[0, 0]`` crop.
    """
    n, height, width = masks.shape[0], masks.shape[-2], masks.shape[-1]
    masks = masks.detach().reshape(n, height, width)
    if masks.dtype != torch.bool:
        masks = masks >= 0.5
    if n == 0:
        return []
    rows, cols = masks.any(2), masks.any(1)  # [n, H], [n, W]
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    extent = torch.stack([
        torch.where(rows, ys, height).amin(1), torch.where(rows, ys + 1, 0).amax(1),
        torch.where(cols, xs, width).amin(1), torch.where(cols, xs + 1, 0).amax(1),
    ], 1).cpu().tolist()
    boxes = [(y0, max(y0, y1), x0, max(x0, x1)) for y0, y1, x0, x1 in extent]
    pieces = [masks[i, y0:y1, x0:x1].reshape(-1) for i, (y0, y1, x0, x1) in enumerate(boxes)]
    flat = torch.cat(pieces).cpu().numpy()
    out, start = [], 0
    for y0, y1, x0, x1 in boxes:
        size = (y1 - y0) * (x1 - x0)
        out.append((y0, x0, flat[start : start + size].reshape(y1 - y0, x1 - x0)))
        start += size
    return out


def detections_to_host(det: dict[str, torch.Tensor], with_masks: bool = True) -> dict[str, Any]:
    """The host copies :func:`host_detections_to_results` needs: numpy boxes, labels, scores
    and, with masks, :func:`mask_crops` plus the mask size (``mask_size``)."""
    out: dict[str, Any] = {
        "boxes": det["boxes"].detach().float().cpu().numpy(),
        "labels": det["labels"].detach().cpu().numpy(),
        "scores": det["scores"].detach().float().cpu().numpy(),
    }
    if with_masks and "masks" in det:
        out["crops"] = mask_crops(det["masks"])
        out["mask_size"] = (int(det["masks"].shape[-2]), int(det["masks"].shape[-1]))
    return out


def host_detections_to_results(host: dict[str, Any], image_id: int,
                               category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """LVIS result dicts from :func:`detections_to_host`'s copies (RLE encoding included;
    touches no tensor, so it may run on another thread)."""
    from loce.data.rle import encode_crop

    boxes, labels, scores = host["boxes"], host["labels"], host["scores"]
    n = len(scores)
    if n == 0:
        return []
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    cats = np.asarray(category_ids, dtype=np.int64)[labels - 1]
    crops = host.get("crops")
    out = []
    for i in range(n):
        r: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(cats[i]),
            "bbox": [round(float(v), 3) for v in xywh[i]],
            "score": float(scores[i]),
        }
        if crops is not None:
            top, left, crop = crops[i]
            r["segmentation"] = encode_crop(crop, top, left, *host["mask_size"])
        out.append(r)
    return out


def detections_to_results(
    det: dict[str, torch.Tensor],
    image_id: int,
    category_ids: Sequence[int],
    with_masks: bool = True,
) -> list[dict[str, Any]]:
    """One image's detections → LVIS result dicts.

    Args:
        det: ``boxes [n, 4]`` float xyxy (original frame), ``labels [n]`` int64 in 1..K,
            ``scores [n]`` float, optionally ``masks [n, 1, H, W]`` bool or float.
        image_id: the dataset's image id.
        category_ids: label ``i`` ↔ ``category_ids[i - 1]``.
        with_masks: encode masks as RLE when present.
    """
    return host_detections_to_results(detections_to_host(det, with_masks), image_id,
                                      category_ids)


class _ResultWriter:
    """Streams result dicts into a JSON list file without holding them all.

    Use as a context manager: the file is written atomically (see :mod:`loce.fileio`) and
    replaces ``path`` only when the block ends without an error, so a run that stops midway
    leaves an existing file untouched.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._writing = atomic_write(path, "w", what="results file")
        self.f = None

    def __enter__(self) -> _ResultWriter:
        self.f = self._writing.__enter__()
        self.f.write("[")
        return self

    def extend(self, results: Iterable[dict[str, Any]]) -> None:
        for r in results:
            self.f.write(("," if self.count else "") + "\n" + json.dumps(r, separators=(",", ":")))
            self.count += 1

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is None:
            self.f.write("\n]\n")
        return self._writing.__exit__(*exc)


@torch.no_grad()
def predict_to_file(
    model: nn.Module | None,
    dataset,
    out_path: str | os.PathLike,
    *,
    device: torch.device,
    indices: Sequence[int] | None = None,
    with_masks: bool = True,
    workers: int = 2,
    batch_size: int = 1,
    progress: bool = True,
    on_image=None,
    forward=None,
) -> int:
    """Run the model on ``dataset[i]`` for ``i`` in ``indices`` and write LVIS results.

    Args:
        model: a detector in the torchvision contract (``model(images,
            original_image_sizes=...)`` → per-image dicts in the original frame), or None
            when ``forward`` runs something else (an ONNX file).
        dataset: an :class:`~loce.data.lvis.LVISDataset` with test-time transforms.
        out_path: the JSON list file to write (atomically).
        device: where to run.
        indices: which items (default: all).
        with_masks: also write RLE masks.
        workers: DataLoader worker processes.
        batch_size: images per forward pass (``eval.images_per_gpu``).
        progress: show a progress bar.
        on_image: optional callback ``(image_index, image, detection)`` (e.g. visualisation).
        forward: optional ``(images, original_sizes) -> detections`` used instead of calling
            the model (``loce predict`` passes :meth:`loce.Detector.detect_batch`).

    Returns:
        The number of result dicts written.

    Only each mask's covered rows and columns are copied to the host
    (:func:`detections_to_host`); RLE encoding and JSON writing run on a worker thread while
    the next batch goes through the model.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from loce.data.samplers import collate_fn
    from loce.logs import progress_bars

    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    # Without masks in the output, skip the mask branch (at 300 detections per image it is
    # most of the inference time).
    heads = getattr(getattr(model, "module", model), "roi_heads", None)
    infer_masks = getattr(heads, "infer_masks", None)
    if infer_masks is not None:
        heads.infer_masks = with_masks
    idx = list(range(len(dataset))) if indices is None else list(indices)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, idx), batch_size=batch_size, shuffle=False,
        num_workers=workers, collate_fn=collate_fn, pin_memory=device.type == "cuda",
    )
    cat_ids = list(dataset.cat_ids)
    # Encoded images in flight at most; the writer keeps the dataset's order.
    max_pending = 4
    pending: deque = deque()
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loce-rle")
    try:
        with _ResultWriter(Path(out_path)) as writer:
            done = 0
            for images, targets in tqdm(loader, total=len(loader), desc="inference",
                                        disable=not (progress and progress_bars()),
                                        leave=False, dynamic_ncols=True, mininterval=1.0):
                images = [im.to(device, non_blocking=True) for im in images]
                sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
                dets = (forward(images, sizes) if forward is not None
                        else model(images, original_image_sizes=sizes))
                for t, d, im in zip(targets, dets, images):
                    host = detections_to_host(d, with_masks)
                    pending.append(encoder.submit(host_detections_to_results, host,
                                                  int(t["image_id"]), cat_ids))
                    if on_image is not None:
                        on_image(idx[done], im, d)
                    done += 1
                while len(pending) > max_pending:
                    writer.extend(pending.popleft().result())
            while pending:
                writer.extend(pending.popleft().result())
    finally:
        encoder.shutdown(wait=True, cancel_futures=True)
        if model is not None:
            model.train(was_training)
        if infer_masks is not None:
            heads.infer_masks = infer_masks
    return writer.count


def merge_result_shards(shards: Sequence[Path], out_path: Path) -> int:
    """Concatenate JSON-list shard files into one JSON list, a block at a time."""
    from loce.evaluation.results_file import merge_results_files

    return merge_results_files(shards, out_path)


def evaluate(model: nn.Module, cfg, out_dir: str | os.PathLike, *, device: torch.device,
             dataset=None, train_categories=None) -> dict[str, Any]:
    """Predict on the validation set (sharded over ranks) and evaluate on rank 0.

    Writes ``out_dir/predictions.json`` and ``out_dir/metrics.json``; returns the metrics
    (``{"bbox": {...}, "segm": {...}}``) on rank 0 and ``{}`` on other ranks. A model
    without a mask branch is evaluated on boxes only, whatever ``eval.iou_types`` says. A
    validation file without LVIS's fields is evaluated with the training split's frequency
    groups (``train_categories``, else computed from ``data.train_ann``; see
    :func:`loce.build.evaluation_ground_truth`).
    """
    from loce import build
    from loce.evaluation.lvis_eval import evaluate_lvis_multi

    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    out = Path(out_dir)
    ensure_directory(out, what="evaluation folder")  # on every node: disks need not be shared
    if dataset is None:
        dataset = build.build_val_dataset(cfg)
    heads = getattr(getattr(model, "module", model), "roi_heads", None)
    has_mask = heads is None or heads.has_mask()
    iou_types = [t for t in cfg.eval.iou_types if t != "segm" or has_mask] or ["bbox"]
    with_masks = "segm" in iou_types
    shard = out / f"predictions.rank{rank}.json"
    predict_to_file(model, dataset, shard, device=device,
                    indices=range(rank, len(dataset), world), with_masks=with_masks,
                    workers=build.data_workers(cfg), batch_size=cfg.eval.images_per_gpu,
                    progress=rank == 0)
    shards = dist_utils.gather_files(
        shard, lambda r: out / f"predictions.rank{r}.received.json", what="results shard")
    if rank != 0:
        shard.unlink()
    metrics: dict[str, Any] = {}
    if rank == 0:
        merged = out / "predictions.json"
        count = merge_result_shards(shards, merged)
        for s in shards:
            s.unlink()
        if count == 0:
            # A model that detects nothing scores zero everywhere (an empty results file is
            # an error for `loce eval`, where it usually means a broken pipeline).
            metrics = {t: {**dict.fromkeys(METRIC_KEYS, 0.0), "num_detections": 0}
                       for t in iou_types}
        else:
            gt = build.evaluation_ground_truth(cfg, train_categories)
            metrics = evaluate_lvis_multi(gt, str(merged), iou_types=iou_types,
                                          max_dets=cfg.eval.max_dets,
                                          protocol=cfg.eval.protocol)
        atomic_write_json(out / "metrics.json", metrics, what="metrics file", sort_keys=True,
                          default=str)
    dist_utils.barrier()
    return metrics
