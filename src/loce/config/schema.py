"""Typed configuration schema for everything except the model (see :mod:`loce.config.model`).

Defaults reproduce the original LOCE stage-1 recipe on LVIS (docs/method.md §8): SGD at
lr 0.02 for 16 images per batch, 24 epochs with steps at 16 and 22, 500 warmup iterations,
multi-scale training with short sides 640-800 and the long side capped at 1333, random image
sampling. A YAML file lists only what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from loce.config._checks import check
from loce.config.method import LoceConfig
from loce.config.model import ModelConfig

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "LoceConfig",
    "SolverConfig",
    "TrainConfig",
]


@dataclass
class DataConfig:
    """Where the data is and how it is loaded and augmented."""

    # LVIS v0.5/v1 or COCO annotation files and the folders their images are found under
    # (LVIS v1 images are looked up by the last components of `coco_url`, v0.5/COCO by
    # `file_name`).
    train_ann: str = "data/lvis_v1/annotations/lvis_v1_train.json"
    train_images: str = "data/lvis_v1"
    val_ann: str = "data/lvis_v1/annotations/lvis_v1_val.json"
    val_images: str = "data/lvis_v1"
    # Multi-scale training: one short side drawn from the list per image, long side capped.
    train_scales: list[int] = field(default_factory=lambda: [640, 672, 704, 736, 768, 800])
    max_size: int = 1333
    # Single-scale test resize.
    test_scale: int = 800
    test_max_size: int = 1333
    # How test images are decoded and resized (docs/parity.md §4 #12, #13): "mmcv" = the
    # original's path, OpenCV decode, cv2.resize(INTER_LINEAR) of the uint8 image, then
    # mmcv's float32 normalisation in the model (bit-equal network input); "torch" = Pillow
    # decode and bilinear resize of the float image (about 0.26 grey levels off on average).
    # Used wherever images are decoded for inference (evaluation, `loce predict`); training
    # is not affected.
    test_resize: Literal["mmcv", "torch"] = "mmcv"
    flip_prob: float = 0.5
    # Frequency groups of an annotation file without LVIS's `frequency` fields (COCO-format
    # data), from the number of training images per class: rare up to the first value,
    # common up to the second, frequent above (LVIS: 1-10, 11-100, > 100). Computed from
    # the training split before training and used by evaluation (APr/APc/APf) and the logs.
    frequency_thresholds: list[int] = field(default_factory=lambda: [10, 100])
    # Image sampling: "random" (LOCE's default) or LVIS repeat factor sampling.
    sampler: Literal["random", "repeat_factor"] = "random"
    repeat_threshold: float = 0.001
    # Images per process (per GPU) in one step; the global batch is this times the world size.
    images_per_gpu: int = 2
    # Batches of images with the same aspect-ratio orientation (landscape/portrait).
    aspect_ratio_grouping: bool = True
    # DataLoader worker processes per process; null: the CPUs this process may use divided
    # by the processes on the machine (LOCAL_WORLD_SIZE), at most 8.
    workers: int | None = None
    # Training images leave the DataLoader workers as "uint8" (normalised on the model's
    # device; pixels quantised to 1/255 after the resize) or "float32" (4x the bytes).
    train_image_dtype: Literal["uint8", "float32"] = "uint8"

    def validate(self, prefix: str = "data") -> None:
        check(len(self.train_scales) > 0, f"{prefix}.train_scales", "must list at least one size")
        for i, s in enumerate(self.train_scales):
            check(s > 0, f"{prefix}.train_scales[{i}]", f"must be positive, got {s}")
        check(self.max_size > 0, f"{prefix}.max_size", f"must be positive, got {self.max_size}")
        check(self.test_scale > 0, f"{prefix}.test_scale", "must be positive")
        check(0.0 <= self.flip_prob <= 1.0, f"{prefix}.flip_prob", f"must be in [0, 1], got {self.flip_prob}")
        check(self.repeat_threshold > 0, f"{prefix}.repeat_threshold", "must be positive")
        check(self.images_per_gpu >= 1, f"{prefix}.images_per_gpu", f"must be >= 1, got {self.images_per_gpu}")
        check(self.workers is None or self.workers >= 0, f"{prefix}.workers",
              f"must be >= 0 or null, got {self.workers}")
        t = list(self.frequency_thresholds)
        check(len(t) == 2 and 1 <= t[0] < t[1], f"{prefix}.frequency_thresholds",
              f"must be [rare_max, common_max] with 1 <= rare_max < common_max, got {t}")


@dataclass
class SolverConfig:
    """SGD with momentum, linear warmup and step decay by epoch.

    The learning rate is for the *global* batch: the original uses lr 0.02 for 16 images
    (2 per GPU x 8 GPUs). For another global batch B scale it linearly: lr = 0.02 * B / 16,
    or set ``auto_scale_lr`` to have the run do it.
    """

    lr: float = 0.02
    # The global batch (images per step) that `lr` is meant for.
    reference_batch: int = 16
    # Scale `lr` linearly to the run's batch, world size x data.images_per_gpu:
    # lr * world_size * images_per_gpu / reference_batch (logged, and stored in the run's config).
    auto_scale_lr: bool = False
    # Set by auto_scale_lr: the config's rate before scaling (leave null).
    lr_scaled_from: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 24
    # Epochs after which the learning rate is multiplied by `gamma`.
    steps: list[int] = field(default_factory=lambda: [16, 22])
    gamma: float = 0.1
    # Linear warmup from lr * warmup_ratio to lr over the first `warmup_iters` iterations.
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    # Clip the global gradient norm to this value; null disables clipping (the original's choice).
    grad_clip: float | None = None
    # Mixed precision on CUDA: "none", "bf16" or "fp16" (fp16 uses a gradient scaler).
    # Ignored (with a warning) on the CPU.
    amp: Literal["none", "bf16", "fp16"] = "none"

    def validate(self, prefix: str = "solver") -> None:
        check(self.lr > 0, f"{prefix}.lr", f"must be positive, got {self.lr}")
        check(self.reference_batch >= 1, f"{prefix}.reference_batch",
              f"must be >= 1, got {self.reference_batch}")
        check(self.lr_scaled_from is None or self.lr_scaled_from > 0, f"{prefix}.lr_scaled_from",
              "must be positive or null")
        check(0 <= self.momentum < 1, f"{prefix}.momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"{prefix}.weight_decay", "must be >= 0")
        check(self.epochs >= 1, f"{prefix}.epochs", f"must be >= 1, got {self.epochs}")
        for i, s in enumerate(self.steps):
            check(0 < s <= self.epochs, f"{prefix}.steps[{i}]",
                  f"must be in 1..epochs ({self.epochs}), got {s}")
        check(list(self.steps) == sorted(self.steps), f"{prefix}.steps", "must be increasing")
        check(0 < self.gamma <= 1, f"{prefix}.gamma", "must be in (0, 1]")
        check(self.warmup_iters >= 0, f"{prefix}.warmup_iters", "must be >= 0")
        check(0 < self.warmup_ratio <= 1, f"{prefix}.warmup_ratio", "must be in (0, 1]")
        check(self.grad_clip is None or self.grad_clip > 0, f"{prefix}.grad_clip",
              "must be positive or null")


@dataclass
class TrainConfig:
    """Run-level settings: where outputs go, seeding, checkpoints, logging."""

    # Run directory: config.yaml, metrics.jsonl, checkpoints, predictions and metrics.json.
    output_dir: str = "runs/default"
    seed: int = 0
    # "auto" picks CUDA when available (the local GPU of this process under torchrun).
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Initialise the model from this checkpoint (a loce checkpoint or a plain state dict);
    # used by fine-tuning stages. Null: start from the backbone weights in `model`.
    init_from: str | None = None
    # Save a checkpoint every N iterations in addition to every epoch (0: epochs only).
    checkpoint_every_iters: int = 0
    # Evaluate every N epochs (0: never during training) and/or after the last epoch.
    eval_every_epochs: int = 0
    eval_at_end: bool = True
    # Write a metrics.jsonl line (and refresh the progress bar) every N iterations.
    log_every_iters: int = 20
    # Value checks that read tensors on the host (labels in range, finite mean scores,
    # boxes with area) run every N iterations, each a GPU sync; 1: every step (debugging).
    check_every_iters: int = 50
    # Stop each epoch after this many iterations (null: the whole epoch). For smoke tests.
    max_iters_per_epoch: int | None = None
    # CPU threads per process (null: leave torch's default).
    threads: int | None = None
    # fp32 matmuls and convolutions in TF32 on GPUs that have it (Ampere and later; about
    # 10 mantissa bits in the products, fp32 accumulation). Training only: `loce test` and
    # `loce predict` keep full fp32 so that released models reproduce their numbers.
    tf32: bool = True
    # TensorBoard scalars in output_dir/tensorboard (needs the `tensorboard` package,
    # `pip install 'loce[tensorboard]'`; without it a log line says so and training goes on).
    tensorboard: bool = True
    # Module-name prefixes whose parameters stay trainable, e.g. [rpn, roi_heads.mask_head]
    # (a prefix matches a parameter name equal to it or starting with it plus "."); every
    # other parameter is frozen, and BatchNorm layers left without trainable parameters use
    # their running statistics. Prefixes narrow what the model builder leaves trainable
    # (frozen ResNet stages stay frozen). Null: everything the builder leaves trainable.
    trainable: list[str] | None = None
    # Module-name prefixes that train.init_from does not load (same matching as `trainable`):
    # they keep the fresh initialisation this run's model gives them. Used when a fine-tune
    # changes a layer's form, e.g. [roi_heads.box_predictor.cls_score] to retrain the box
    # classifier of a softmax stage-1 model with a sigmoid loss (which starts from its prior
    # bias), a cosine classifier, or Seesaw's K + 2 outputs. Shapes of these layers may differ
    # from the checkpoint's.
    reinit: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "train") -> None:
        check(self.checkpoint_every_iters >= 0, f"{prefix}.checkpoint_every_iters", "must be >= 0")
        check(self.eval_every_epochs >= 0, f"{prefix}.eval_every_epochs", "must be >= 0")
        check(self.log_every_iters >= 1, f"{prefix}.log_every_iters", "must be >= 1")
        check(self.check_every_iters >= 1, f"{prefix}.check_every_iters", "must be >= 1")
        check(self.max_iters_per_epoch is None or self.max_iters_per_epoch >= 1,
              f"{prefix}.max_iters_per_epoch", "must be >= 1 or null")
        check(self.threads is None or self.threads >= 1, f"{prefix}.threads", "must be >= 1 or null")
        if self.trainable is not None:
            check(len(self.trainable) > 0, f"{prefix}.trainable",
                  "must list at least one module prefix, or be null (train everything)")
            for i, p in enumerate(self.trainable):
                check(bool(p.strip().strip(".")), f"{prefix}.trainable[{i}]",
                      f"must be a module name such as 'rpn', got {p!r}")
        for i, p in enumerate(self.reinit):
            check(bool(p.strip().strip(".")), f"{prefix}.reinit[{i}]",
                  f"must be a module name such as 'roi_heads.box_predictor.cls_score', got {p!r}")


@dataclass
class EvalConfig:
    """Evaluation settings (LVIS protocol)."""

    iou_types: list[str] = field(default_factory=lambda: ["bbox", "segm"])
    max_dets: int = 300
    protocol: Literal["standard", "fixed", "pooled"] = "standard"
    # Images per process during inference.
    images_per_gpu: int = 1

    def validate(self, prefix: str = "eval") -> None:
        for i, t in enumerate(self.iou_types):
            check(t in ("bbox", "segm"), f"{prefix}.iou_types[{i}]",
                  f"must be 'bbox' or 'segm', got {t!r}")
        check(self.max_dets >= 1, f"{prefix}.max_dets", "must be >= 1")
        check(self.images_per_gpu >= 1, f"{prefix}.images_per_gpu", "must be >= 1")


@dataclass
class Config:
    """A whole experiment. Defaults: Mask R-CNN R50-FPN stage 1 on LVIS v1 (original recipe)."""

    # Free-form experiment name (defaults to the YAML file's stem).
    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # The LOCE fine-tune (off: plain Mask R-CNN).
    loce: LoceConfig = field(default_factory=LoceConfig)

    def validate(self) -> None:
        for name in ("model", "data", "solver", "train", "eval", "loce"):
            section = getattr(self, name)
            validate = getattr(section, "validate", None)
            if validate is not None:
                try:
                    validate(prefix=name)
                except TypeError:
                    validate()
