"""Shared pieces of the classification losses: input checks, the base module, collectives, RNG.

Shape shorthand:
    N: rows of the classification batch (sampled RoIs on this rank).
    K: foreground classes; labels are ``0..K`` with 0 = background.
    C': logits per row, ``num_logits(K)`` of the loss (``K + 1``, or ``K + 2`` for Seesaw).

Every loss divides its sum by ``N``, the number of all sampled RoIs on the rank, even when it
sums over classes or only positives contribute (docs/methods.md §1.1 "Normalisation").

The functional losses (``eql_loss``, ``ecm_loss``, ...) return a float32 scalar; with ``N = 0``
it is 0 and still connected to ``logits``, so a backward pass works. They raise ValueError
for shapes or dtypes that do not match, or a label outside ``0..K``, naming the argument.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

# The names of the classification losses are defined by the config, which does not import torch.
from loce.config.model import CLS_LOSSES as LOSS_NAMES
from loce.config.model import ClsLossName as LossName
from loce.errors import CheckpointError

__all__ = ["LOSS_NAMES", "ClassificationLoss", "LossName", "RankGenerator", "TailSetLoss"]

logger = logging.getLogger(__name__)

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_logits_labels(logits: Tensor, labels: Tensor, width: int | None = None) -> int:
    """Check the shapes and dtypes of ``logits [N, C']`` and ``labels [N]``; return ``C'``.

    Args:
        logits: ``[N, C']`` float logits.
        labels: ``[N]`` integer labels in ``0..K``.
        width: expected ``C'`` when the caller knows it (a module built for ``K`` classes);
            ``None`` accepts any width ``>= 2``.

    Returns:
        ``C'``, the number of columns; the caller derives ``K`` from it by its layout.

    Raises:
        ValueError: naming the argument and its shape or dtype.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [N, C'], got shape {list(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got dtype {logits.dtype}")
    n, c = logits.shape
    if width is not None and c != width:
        raise ValueError(
            f"logits must have {width} columns for this loss, got shape {list(logits.shape)}"
        )
    if c < 2:
        raise ValueError(
            f"logits need a background column and at least one foreground column, "
            f"got shape {list(logits.shape)}"
        )
    if labels.shape != (n,):
        raise ValueError(
            f"labels must have shape [N] = [{n}] to match logits {list(logits.shape)}, "
            f"got shape {list(labels.shape)}"
        )
    if labels.dtype not in _INT_DTYPES:
        raise ValueError(f"labels must be an integer tensor (int64), got dtype {labels.dtype}")
    return c


def check_inputs(logits: Tensor, labels: Tensor) -> int:
    """:func:`check_logits_labels`, then :func:`check_label_range` for ``C' = K + 1``.

    Returns:
        ``C'``.
    """
    c = check_logits_labels(logits, labels)
    check_label_range(labels, c - 1)
    return c


def check_shape(t: Tensor, name: str, dims: str, shape: tuple[int, ...], note: str = "") -> None:
    """Raise ValueError ``{name} must have shape {dims} = [..]{note}, got shape [..]``.

    Args:
        t: the tensor to check.
        name: argument name for the message.
        dims: the expected shape in symbols, e.g. ``"[K + 1]"``.
        shape: the expected shape in numbers.
        note: text after the expected shape, e.g. ``" to match logits [N, C']"``.
    """
    if t.shape != shape:
        raise ValueError(
            f"{name} must have shape {dims} = {list(shape)}{note}, got shape {list(t.shape)}"
        )


def check_tail_inputs(logits: Tensor, labels: Tensor, tail: Tensor) -> int:
    """:func:`check_inputs`, then EQL's and Gumbel's tail indicator ``tail [K]``; return ``C'``."""
    c = check_inputs(logits, labels)
    check_shape(tail, "tail", "[K]", (c - 1,), " (one entry per foreground class, label 1 first)")
    return c


def check_label_range(labels: Tensor, num_classes: int) -> None:
    """Raise ValueError naming the first label outside ``0..num_classes`` (one host sync)."""
    if labels.numel() == 0:
        return
    bad = (labels < 0) | (labels > num_classes)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()
        i = int(rows[0])
        raise ValueError(
            f"labels must lie in 0..{num_classes} (0 = background, {num_classes} foreground "
            f"classes), found {int(labels[i])} at row {i} ({rows.numel()} rows out of range)"
        )


def empty_loss(logits: Tensor) -> Tensor:
    """Zero float32 scalar still connected to ``logits``, so backward works on an empty batch."""
    return logits.float().sum() * 0.0


def class_vector(values: Tensor | Sequence[float], num_classes: int, name: str) -> Tensor:
    """Validate a per-class statistic for classes ``1..K``; return it as a float64 ``[K]``.

    Args:
        values: ``[K]`` statistic of the foreground classes, in label order (label 1 first).
        num_classes: ``K``.
        name: argument name for the error message.

    Raises:
        ValueError: wrong length, or an entry that is negative or not finite (with its label).
    """
    t = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if t.shape != (num_classes,):
        raise ValueError(
            f"{name} must have one entry per foreground class, shape [K] = [{num_classes}] "
            f"(label 1 first, no background entry), got shape {list(t.shape)}"
        )
    bad = ~torch.isfinite(t) | (t < 0)
    if bool(bad.any()):
        j = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite and >= 0, found {float(t[j])} for class label {j + 1}"
        )
    return t


def world_size() -> int:
    """World size when torch.distributed is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank when torch.distributed is initialised, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks (a copy on the input device); identity in one process.

    NCCL only reduces CUDA tensors and gloo CPU ones, so the tensor travels to the device the
    backend accepts and back. Every rank must call this the same number of times.
    """
    if world_size() <= 1:
        return tensor
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    buf = tensor.detach().to(device=device, copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def _device_key(device: torch.device) -> str:
    """``"cpu"`` for any CPU device (one CPU generator serves them all), else ``str(device)``."""
    return "cpu" if device.type == "cpu" else str(device)


class RankGenerator:
    """Seeded ``torch.Generator`` per device, offset by the rank so each rank draws its own.

    Created lazily at the first draw: the process group may start after the loss is built.
    The training engine saves each rank's generator states in the checkpoint
    (:meth:`get_state`) and gives them back on ``--resume`` (:meth:`set_state`), so a resumed
    run continues the stream where the checkpoint left it (the original code draws from the
    unseeded global RNG and cannot resume its draws).

    Args:
        seed: base seed; rank ``r`` uses ``seed + r``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}
        # States given by set_state for generators not created yet, by device.
        self._pending: dict[str, Tensor] = {}

    def get(self, device: torch.device) -> torch.Generator:
        """The generator of ``device``: created at the first call, seeded with ``seed + rank``,
        or with the state :meth:`set_state` gave for that device.

        When :meth:`set_state` gave states for other devices only (a checkpoint written on the
        CPU, resumed on a GPU), the generator starts from the seed, with a warning.
        """
        key = _device_key(device)
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed + rank())
            state = self._pending.pop(key, None)
            if state is not None:
                g.set_state(state)
            elif self._pending:
                logger.warning("the random draws on %s start from the seed: the state restored "
                               "for them is of a generator on %s, so the resumed run is not "
                               "exact", key, ", ".join(sorted(self._pending)))
            self._generators[key] = g
        return self._generators[key]

    def get_state(self) -> dict[str, Tensor]:
        """``{device: state}`` of every generator, each state a 1-D uint8 CPU tensor (16 bytes
        for a CUDA generator, 5056 for a CPU one); a state given by :meth:`set_state` and not
        used yet is returned as it was given. Empty before the first draw."""
        states = {key: state.clone() for key, state in self._pending.items()}
        states.update({key: g.get_state() for key, g in self._generators.items()})
        return states

    def set_state(self, states: Mapping[str, Tensor]) -> None:
        """Continue the streams of :meth:`get_state`: each generator, created now or at its
        first draw, starts from the state saved for its device.

        All or nothing: on an error no state is taken.

        Args:
            states: ``{device: state}``, as :meth:`get_state` returns it.

        Raises:
            TypeError: ``states`` is not a mapping of device names to 1-D uint8 tensors.
            ValueError: a device this process cannot create a generator on, or a state whose
                size is not that of a generator of its device (written by another kind of
                generator).
        """
        if not isinstance(states, Mapping):
            raise TypeError(f"the states must be a mapping of device to tensor, found "
                            f"{type(states).__name__}")
        checked: dict[str, Tensor] = {}
        for key, state in states.items():
            if not torch.is_tensor(state) or state.dtype != torch.uint8 or state.dim() != 1:
                raise TypeError(f"the state for device {key!r} must be a 1-D uint8 tensor, "
                                f"found {type(state).__name__}")
            try:
                size = torch.Generator(device=torch.device(key)).get_state().numel()
                key = _device_key(torch.device(key))
            except (RuntimeError, TypeError) as err:  # no such device here (e.g. no CUDA)
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise ValueError(f"this process cannot create a generator on device {key!r} "
                                 f"({type(err).__name__}: {first_line})") from None
            if state.numel() != size:
                raise ValueError(f"the state for device {key!r} has {state.numel()} bytes, a "
                                 f"generator there has {size}")
            checked[key] = state.detach().cpu().clone()
        for key, state in checked.items():
            if key in self._generators:
                self._generators[key].set_state(state)
            else:
                self._pending[key] = state

    def reset(self) -> None:
        """Forget the generators and any state given: the next draw starts from the seed."""
        self._generators.clear()
        self._pending.clear()


class ClassificationLoss(nn.Module):
    """Base of the box-classification losses: ``loss(logits [N, C'], labels [N]) -> scalar``.

    Subclasses set :attr:`extra_logits` (``C' = K + extra_logits``), implement :meth:`forward`
    and :meth:`scores`, and name in :attr:`repr_fields` the attributes ``extra_repr`` shows
    after ``num_classes`` and ``loss_weight``. Buffers hold any per-class statistic, so it
    moves with the model and is saved in ``state_dict``; loading a state built for another
    ``K`` raises :class:`loce.errors.CheckpointError` naming the key.

    A loss that draws at random (federated, Gumbel) draws from its :attr:`draws`; the training
    engine finds it there, whatever the loss, to save and restore its state with each rank's
    random state in the checkpoint.

    Args:
        num_classes: ``K``, the number of foreground classes.
        loss_weight: factor applied to the returned loss.

    Attributes:
        draws: the :class:`RankGenerator` of the loss's random draws, or ``None`` for a loss
            that draws nothing.
    """

    #: Predictor columns beyond ``K``: 1 for ``K + 1`` (background/objectness at column 0).
    extra_logits: ClassVar[int] = 1
    #: Attributes shown by ``extra_repr``, as ``name=value``.
    repr_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_classes: int, loss_weight: float = 1.0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.loss_weight = float(loss_weight)
        self.draws: RankGenerator | None = None

    @classmethod
    def num_logits(cls, num_classes: int) -> int:
        """Width ``C'`` of the classifier output this loss expects for ``K`` classes."""
        return int(num_classes) + cls.extra_logits

    @classmethod
    def init_classifier_(cls, weight: Tensor, bias: Tensor | None) -> None:
        """Initialise the final classifier layer in place as the method's original code does.

        The default keeps the predictor's own initialisation.

        Args:
            weight: ``[C', F]`` classifier weight.
            bias: ``[C']`` classifier bias, or ``None``.
        """

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch, times ``loss_weight``.

        Args:
            logits: ``[N, C']`` float in the loss's layout (column 0 background).
            labels: ``[N]`` int64 in ``0..K``.

        Returns:
            float32 scalar.
        """
        raise NotImplementedError

    def scores(self, logits: Tensor) -> Tensor:
        """Inference scores ``[N, K + 1]`` (column 0 background) from ``logits [N, C']``."""
        raise NotImplementedError

    def _check(self, logits: Tensor, labels: Tensor) -> None:
        check_logits_labels(logits, labels, width=self.num_logits(self.num_classes))
        check_label_range(labels, self.num_classes)

    def _weighted(self, loss: Tensor) -> Tensor:
        return loss * self.loss_weight if self.loss_weight != 1.0 else loss

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is None or key not in state_dict:
                continue
            found = tuple(state_dict[key].shape)
            if found != tuple(buf.shape):
                raise CheckpointError(
                    f"checkpoint key {key!r} holds a {type(self).__name__} statistic of shape "
                    f"{list(found)}, but this loss has {self.num_classes} foreground classes "
                    f"(shape {list(buf.shape)}); use a checkpoint trained on the same category "
                    f"set or build the model with the matching num_classes"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        fields = [f"num_classes={self.num_classes}", f"loss_weight={self.loss_weight}"]
        fields += [f"{name}={getattr(self, name)}" for name in self.repr_fields]
        return ", ".join(fields)


def init_sigmoid_prior_(weight: Tensor, bias: Tensor | None, prior: float, std: float = 0.01) -> None:
    """Sigmoid classifier initialisation: weights N(0, std), bias ``-ln((1 - prior) / prior)``
    so that every class starts at probability ``prior`` (focal-loss style;
    docs/methods.md §2.1, §3, §5.1)."""
    with torch.no_grad():
        nn.init.normal_(weight, mean=0.0, std=std)
        if bias is not None:
            bias.fill_(-math.log((1.0 - prior) / prior))


def tail_buffer(image_frequency: Tensor | Sequence[float], num_classes: int,
                freq_threshold: float) -> Tensor:
    """``[K]`` float32 tail indicator ``1[f_c < freq_threshold]`` (EQL and Gumbel,
    docs/methods.md §2, §7).

    Raises:
        ValueError: a negative threshold or ``image_frequency`` not of length ``K``.
    """
    if not freq_threshold >= 0.0:
        raise ValueError(f"freq_threshold must be >= 0, got {freq_threshold!r}")
    f = class_vector(image_frequency, num_classes, "image_frequency")
    return (f < float(freq_threshold)).to(torch.float32)


class TailSetLoss(ClassificationLoss):
    """Base of the losses that ignore tail negatives (EQL, Gumbel): the tail set as a buffer.

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs, column 0 unused.
        image_frequency: ``[K]`` image frequency ``f_c`` of labels 1..K in the training set.
        freq_threshold: ``lambda``; classes with ``f_c < lambda`` are tail.
        loss_weight: factor applied to the loss (1.0).

    Attributes:
        tail: ``[K]`` float32 buffer, 1.0 for tail classes (see :func:`tail_buffer`).
    """

    repr_fields = ("freq_threshold",)
    tail: Tensor

    def __init__(
        self,
        num_classes: int,
        image_frequency: Tensor | Sequence[float],
        freq_threshold: float = 0.00177,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(num_classes, loss_weight)
        self.register_buffer("tail", tail_buffer(image_frequency, self.num_classes, freq_threshold))
        self.freq_threshold = float(freq_threshold)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tail_classes={int(self.tail.sum())}"
