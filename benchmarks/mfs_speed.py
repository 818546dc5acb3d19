"""Speed of the feature memory's push and sample, vectorised against a per-row Python loop.

One push is one training iteration's ground-truth features: ``images x gts_per_image`` boxes,
16 jitters each (docs/method.md §4), so 480 rows at the defaults. One sample draws 8 classes x 4
features. The loop version writes row by row and gathers class by class, as a direct
transcription of the method would; both versions must end with identical memories.

Usage::

    python benchmarks/mfs_speed.py                      # LVIS v1 scale, float16 storage
    python benchmarks/mfs_speed.py --num-classes 300 --json out.json

At LVIS scale each memory holds 1203 x 80 x 256 x 49 x 2 B = 2.4 GB in float16 (the loop
version allocates a second one); pass a smaller ``--num-classes`` where memory is tight.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from loce.method import FeatureMemory

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class LoopMemory:
    """Reference implementation with Python loops over rows (push) and draws (sample)."""

    def __init__(self, memory: FeatureMemory) -> None:
        self.m = memory

    @torch.no_grad()
    def push(self, features: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> None:
        m = self.m
        written: dict[int, int] = {}
        for i, label in enumerate(labels.tolist()):
            c = label - 1
            if written.get(c, 0) >= m.capacity:
                continue
            slot = int(m.pointer[c])
            m.features[c, slot] = features[i].to(m.dtype)
            m.targets[c, slot] = targets[i]
            m.pointer[c] = (slot + 1) % m.capacity
            m.count[c] = min(int(m.count[c]) + 1, m.capacity)
            written[c] = written.get(c, 0) + 1

    @torch.no_grad()
    def sample(self, scores: torch.Tensor, generator: torch.Generator, n_cls=8, per_class=4):
        m = self.m
        weights = 1.0 / (scores[1:].double() + 1e-7)
        drawn = torch.multinomial(weights, n_cls, replacement=True, generator=generator)
        feats, labels, targets = [], [], []
        for c in drawn.tolist():
            n = int(m.count[c])
            if n == 0:
                continue
            idx = torch.randint(0, n, (per_class,), generator=generator)
            feats.append(m.features[c, idx])
            targets.append(m.targets[c, idx])
            labels.append(torch.full((per_class,), c + 1, dtype=torch.int64))
        return torch.cat(feats), torch.cat(labels), torch.cat(targets)


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-classes", type=int, default=1203)
    parser.add_argument("--capacity", type=int, default=80)
    parser.add_argument("--feature-shape", type=int, nargs="+", default=[256, 7, 7])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--gts-per-image", type=int, default=15)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    k, shape, dtype = args.num_classes, tuple(args.feature_shape), DTYPES[args.dtype]
    g = torch.Generator().manual_seed(args.seed)
    rows = args.images * args.gts_per_image * 16
    # Each iteration's ground-truth classes, 16 consecutive rows per box; a few repeats so that
    # some classes exceed one box per push.
    batches = []
    for _ in range(args.iters):
        gt_labels = torch.randint(
            1, min(k, 40) + 1, (args.images * args.gts_per_image,), generator=g
        )
        gt_labels = torch.where(
            torch.rand(gt_labels.shape, generator=g) < 0.5,
            gt_labels,
            torch.randint(1, k + 1, gt_labels.shape, generator=g),
        )
        labels = gt_labels.repeat_interleave(16)
        batches.append(
            (torch.randn(rows, *shape, generator=g), labels, torch.randn(rows, 4, generator=g))
        )
    scores = torch.rand(k + 1, generator=g) * 0.5 + 0.01

    fast = FeatureMemory(k, args.capacity, shape, dtype=dtype)
    slow = LoopMemory(FeatureMemory(k, args.capacity, shape, dtype=dtype))
    it = iter(range(10**9))

    push_fast = _time(lambda: fast.push(*batches[next(it) % args.iters]), args.iters)
    it = iter(range(10**9))
    push_slow = _time(lambda: slow.push(*batches[next(it) % args.iters]), args.iters)
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            (fast.features, fast.targets, fast.pointer, fast.count),
            (slow.m.features, slow.m.targets, slow.m.pointer, slow.m.count),
        )
    )
    # Sampling is timed on full queues, as after the initialisation pass (docs/method.md §5).
    for memory in (fast, slow.m):
        memory.count.fill_(args.capacity)
    gs = torch.Generator().manual_seed(1)
    sample_fast = _time(lambda: fast.sample(scores, generator=gs), args.iters)
    sample_slow = _time(lambda: slow.sample(scores, gs), args.iters)

    med = statistics.median
    result = {
        "num_classes": k,
        "capacity": args.capacity,
        "feature_shape": list(shape),
        "dtype": args.dtype,
        "rows_per_push": rows,
        "threads": args.threads,
        "memory_bytes": fast.nbytes,
        "push_vectorised_ms": 1e3 * med(push_fast),
        "push_loop_ms": 1e3 * med(push_slow),
        "push_speedup": med(push_slow) / med(push_fast),
        "sample_vectorised_ms": 1e3 * med(sample_fast),
        "sample_loop_ms": 1e3 * med(sample_slow),
        "sample_speedup": med(sample_slow) / med(sample_fast),
        "identical_memories": same,
    }
    print(
        f"memory: {k} classes x {args.capacity} x {list(shape)} {args.dtype} = {fast.nbytes / 2**30:.2f} GiB"
    )
    print(
        f"push   ({rows} rows): vectorised {result['push_vectorised_ms']:8.2f} ms | loop {result['push_loop_ms']:8.2f} ms | {result['push_speedup']:.1f}x"
    )
    print(
        f"sample (8 x 4):     vectorised {result['sample_vectorised_ms']:8.2f} ms | loop {result['sample_loop_ms']:8.2f} ms | {result['sample_speedup']:.1f}x"
    )
    print(f"identical memories after {args.iters} pushes: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
