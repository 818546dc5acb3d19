"""CPU time of each step of loce's LVIS evaluation that the engine does not do itself.

Takes folders written by ``benchmarks/eval_speed.py --keep-data`` (``gt.json`` and
``results.json``) and times, in this process, one after the other:

- the ground truth: Python's ``json`` and msgspec on the annotation file, with and without the
  garbage collector; loce's whole ``load_ground_truth``; the engine's ``COCO`` alone;
- boxes: the byte screen (``scan_results_file``) of the box results file;
- masks: the column pass (``read_results_columns``) of the mask results file; the engine's
  parse of the same file.

Usage::

    python benchmarks/eval_parts.py --bbox /tmp/bd/bbox_20000_seed0 --segm /tmp/bd/segm_20000_seed0

Prints one line per step (CPU seconds, user + sys) and writes
``benchmarks/results/eval_parts.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time(rows: list[dict[str, Any]], step: str, fn: Callable[[], Any], *, gc_off: bool = False,
          ) -> Any:  # fmt: skip
    was = gc.isenabled()
    if gc_off:
        gc.disable()
    start = _cpu()
    out = fn()
    seconds = _cpu() - start
    if was:
        gc.enable()
    rows.append({"step": step, "cpu_s": round(seconds, 3)})
    print(f"{step:<58} {seconds:7.2f} CPU-s", flush=True)
    return out


def _steps(kind: str, folder: Path, rows: list[dict[str, Any]]) -> None:
    import hotcoco
    import msgspec

    from loce.evaluation import load_ground_truth
    from loce.evaluation.results import scan_results_file
    from loce.evaluation.results_file import read_results_columns

    gt_path, res_path = folder / "gt.json", folder / "results.json"
    print(f"[{kind}] {folder}", flush=True)
    text = gt_path.read_bytes()
    for gc_off in (False, True):
        note = ", collector paused" if gc_off else ""
        _time(rows, f"{kind} gt: json.loads{note}", lambda: json.loads(text), gc_off=gc_off)
        _time(rows, f"{kind} gt: msgspec decode{note}", lambda: msgspec.json.decode(text),
              gc_off=gc_off)  # fmt: skip
    truth = _time(rows, f"{kind} gt: loce load_ground_truth", lambda: load_ground_truth(gt_path))
    _time(rows, f"{kind} gt: engine COCO alone", lambda: hotcoco.COCO(str(gt_path)))
    if kind == "bbox":
        _time(rows, "bbox results: byte screen", lambda: scan_results_file(res_path))
        return
    _time(rows, "segm results: loce column pass", lambda: read_results_columns(
        res_path, gt_image_ids=truth.image_ids, gt_image_sizes=truth.image_sizes,
        gt_category_ids=truth.category_ids, iou_types=("segm",)))  # fmt: skip
    _time(rows, "segm results: engine parse", lambda: truth.coco.load_res(str(res_path)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbox", type=Path, help="folder with gt.json and a box results.json")
    parser.add_argument("--segm", type=Path, help="folder with gt.json and a mask results.json")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "eval_parts.json")  # fmt: skip
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    for kind, folder in (("bbox", args.bbox), ("segm", args.segm)):
        if folder is not None:
            _steps(kind, folder, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "rows": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
