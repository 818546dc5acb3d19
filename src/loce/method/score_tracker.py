"""Running mean classification score per class (docs/method.md §2).

Shape shorthand:
    K: foreground classes; the score vector has ``K + 1`` entries.
    M: observations in one update (one per ground truth with positives, plus one per
       distinct class drawn from the feature memory).

Index 0 is background, held fixed at ``bg_score``; indices 1..K are the foreground classes.
The original code keeps background last (index ``K``); the re-indexing changes nothing else.

Update rule, per class ``c`` with ``n_c >= 1`` observations of mean ``m_c`` in this update::

    s_c <- alpha**n_c * s_c + (1 - alpha**n_c) * m_c
    s_0 <- bg_score

which is the closed form of ``n_c`` EMA steps with momentum ``alpha`` whose observations all
equal ``m_c``. Classes without an observation keep their value.

Deviations from the original code (deliberate, docs/method.md §11.3 and §11.4): the update is
vectorised (no Python loop over classes), and the scores are a registered buffer, so they are saved
in checkpoints and restored on resume.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from loce.checks import checks_enabled
from loce.errors import CheckpointError

__all__ = ["MeanScoreTracker"]


def _distributed_world_size() -> int:
    """World size when torch.distributed is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _collective_device() -> torch.device:
    """Device the process group's collectives accept: CUDA for NCCL, CPU otherwise (gloo)."""
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather_observations(labels: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather variable-length observation lists from every rank.

    Each rank pads its list to the longest one with label -1 (docs/method.md §2); padded rows are
    dropped after the gather, so every rank returns the same concatenated lists, in rank order.

    Args:
        labels: ``[M]`` int64 local labels (M may differ per rank, and may be 0).
        values: ``[M]`` float local observations.

    Returns:
        ``(labels [G] int64, values [G] float64)`` on the input device, ``G`` = total count.
    """
    world = dist.get_world_size()
    device = _collective_device()
    size = torch.tensor([labels.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    # Labels and values travel in one float64 tensor: one collective instead of two. Labels are
    # < 2**53, so the round trip through float64 is exact.
    packed = torch.full((longest, 2), -1.0, dtype=torch.float64, device=device)
    m = labels.numel()
    packed[:m, 0] = labels.to(device=device, dtype=torch.float64)
    packed[:m, 1] = values.to(device=device, dtype=torch.float64)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(gathered, packed)
    rows = torch.cat(gathered, dim=0)
    rows = rows[rows[:, 0] >= 0]
    return rows[:, 0].to(device=labels.device, dtype=torch.int64), rows[:, 1].to(labels.device)


class MeanScoreTracker(nn.Module):
    """Per-class running mean classification score ``s`` (docs/method.md §2).

    ``scores`` is a registered buffer of shape ``[K + 1]``: it moves with the model, is saved in
    ``state_dict`` (a resumed run can skip the initialisation pass) and is identical on every
    rank, because every rank applies the same all-gathered update.

    Args:
        num_classes: ``K``, the number of foreground classes.
        alpha: EMA momentum per observation, in ``[0, 1)`` (docs/method.md §8: 0.9).
        bg_score: fixed score of background (index 0), ``> 0`` (docs/method.md §8: 0.01).
        init_score: initial score of every foreground class, ``> 0`` (docs/method.md §8: 0.01).

    Attributes:
        scores: ``[K + 1]`` float32 buffer; ``scores[0] == bg_score``.
    """

    scores: Tensor

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.9,
        bg_score: float = 0.01,
        init_score: float = 0.01,
    ) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha!r}")
        if not bg_score > 0.0:
            raise ValueError(
                f"bg_score must be > 0 (its log shifts the background logit), got {bg_score!r}"
            )
        if not init_score > 0.0:
            raise ValueError(f"init_score must be > 0, got {init_score!r}")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.bg_score = float(bg_score)
        self.init_score = float(init_score)
        scores = torch.full((self.num_classes + 1,), self.init_score, dtype=torch.float32)
        scores[0] = self.bg_score
        self.register_buffer("scores", scores)

    @torch.no_grad()
    def reset(self) -> None:
        """Set every foreground score back to ``init_score`` and background to ``bg_score``."""
        self.scores.fill_(self.init_score)
        self.scores[0] = self.bg_score

    @torch.no_grad()
    def update(self, labels: Tensor, values: Tensor) -> None:
        """Fold one iteration's observations into the scores.

        Under torch.distributed (initialised, world size > 1) the observations of all ranks are
        all-gathered first, so every rank must call ``update`` once per iteration, even with
        ``M = 0`` observations; otherwise the collective waits forever.

        Args:
            labels: ``[M]`` int64 foreground class of each observation, in ``1..K``.
            values: ``[M]`` float observed mean score (a softmax probability) of each
                observation. Detached; any device.

        Raises:
            ValueError: shape mismatch, non-integer labels, labels outside ``1..K`` (the message
                gives the first offending position) or non-finite values.
        """
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape [M], got shape {list(labels.shape)}")
        if values.shape != labels.shape:
            raise ValueError(
                f"values must have the same shape as labels [M] = {list(labels.shape)}, "
                f"got shape {list(values.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor (int64), got dtype {labels.dtype}")
        k = self.num_classes
        if checks_enabled() and labels.numel():
            bad = (labels < 1) | (labels > k)
            nonfinite = ~torch.isfinite(values)
            if bool(bad.any() | nonfinite.any().to(bad.device)):  # one host sync when all is well
                if bool(bad.any()):
                    i = int(torch.nonzero(bad)[0])
                    raise ValueError(
                        f"labels must be foreground classes in 1..{k} (background 0 is never "
                        f"observed), found {int(labels[i])} at position {i}"
                    )
                i = int(torch.nonzero(nonfinite)[0])
                raise ValueError(f"values must be finite, found {float(values[i])} at position {i}")

        labels = labels.detach().to(self.scores.device, torch.int64)
        values = values.detach().to(self.scores.device, torch.float64)
        if _distributed_world_size() > 1:
            labels, values = _all_gather_observations(labels, values)

        # Float64 for the sums: thousands of observations per class in one update (the
        # initialisation pass on many ranks) should not lose precision.
        counts = torch.bincount(labels, minlength=k + 1).to(torch.float64)
        sums = torch.zeros(k + 1, dtype=torch.float64, device=labels.device)
        sums.index_add_(0, labels, values)
        seen = counts > 0
        mean = sums / counts.clamp(min=1.0)
        decay = torch.pow(torch.full_like(counts, self.alpha), counts)
        old = self.scores.to(torch.float64)
        new = torch.where(seen, decay * old + (1.0 - decay) * mean, old)
        new[0] = self.bg_score
        self.scores.copy_(new)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        key = prefix + "scores"
        if key in state_dict and tuple(state_dict[key].shape) != tuple(self.scores.shape):
            found = tuple(state_dict[key].shape)
            raise CheckpointError(
                f"checkpoint key {key!r} holds mean scores of shape {list(found)} "
                f"({found[0] - 1 if found else '?'} foreground classes + background), but this "
                f"tracker has {self.num_classes} foreground classes (shape "
                f"[{self.num_classes + 1}]); use a checkpoint trained on the same category set "
                f"or build the model with num_classes={found[0] - 1 if found else '?'}"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, alpha={self.alpha}, bg_score={self.bg_score}, "
            f"init_score={self.init_score}"
        )
