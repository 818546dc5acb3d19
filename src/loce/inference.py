"""A Python inference API: :class:`Detector`.

::

    from loce import Detector

    det = Detector.from_checkpoint("converted.pth", device="cuda")   # or any loce checkpoint
    result = det("street.jpg")       # a path, PIL image, HxWx3 uint8 array or [3,H,W] tensor
    result.boxes, result.scores, result.labels, result.category_ids, result.names, result.masks
    results = det(["a.jpg", "b.jpg"], batch_size=4)
    det.draw(result, "a.jpg", "a_pred.png")

The detector runs the checkpoint's model with its config's test transforms
(:func:`loce.build.build_test_transforms`) and test settings; ``score_threshold``, ``top_k``,
``with_masks`` and any ``overrides`` (``"model.parity.roi_align=torchvision"``, ...) change
them. ``loce predict`` runs through the same object (:meth:`Detector.detect_batch`).

Inputs. Colour images are used as they are. Grey, grey + alpha, RGBA, palette and CMYK images
are converted to RGB, as MMDetection's loader does (``imread(flag='color')``: grey is
replicated to three channels, alpha is dropped), and the result carries a ``note`` saying so.
Refused with a one-line :class:`~loce.errors.DataError`: unreadable or non-image files,
images with a zero side, arrays or tensors of another shape or dtype, and image files over
:data:`MAX_PIXELS` (a decompression bomb: a small file that decodes to gigabytes).

Shape shorthand: ``n`` detections, ``H, W`` the original image size, ``K`` classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from loce.data.image_io import MAX_PIXELS, describe_input, read_image, to_rgb_array
from loce.errors import DataError

__all__ = ["MAX_PIXELS", "DetectionResult", "Detector", "OnnxDetector", "read_image", "to_rgb_array"]


@dataclass
class DetectionResult:
    """One image's detections in the original image frame (on the CPU).

    Attributes:
        boxes: ``[n, 4]`` float32 ``x1, y1, x2, y2`` pixels.
        scores: ``[n]`` float32, highest first.
        labels: ``[n]`` int64 in 1..K (0 is the background).
        category_ids: ``[n]`` int64 dataset category ids (LVIS ids).
        names: ``n`` category names.
        masks: ``[n, H, W]`` bool, or None when the detector runs without masks.
        image_size: ``(H, W)``.
        note: set when the input was converted (e.g. a grey image to RGB).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    category_ids: Tensor
    names: list[str]
    masks: Tensor | None
    image_size: tuple[int, int]
    note: str | None = None

    def __len__(self) -> int:
        return int(self.scores.numel())

    def as_dict(self) -> dict[str, Tensor]:
        """``{"boxes", "labels", "scores"[, "masks" [n, 1, H, W]]}`` as the model returns it."""
        out = {"boxes": self.boxes, "labels": self.labels, "scores": self.scores}
        if self.masks is not None:
            out["masks"] = self.masks[:, None]
        return out

    def to_lvis(self, image_id: int) -> list[dict[str, Any]]:
        """LVIS result dicts (``bbox`` as ``[x, y, w, h]``, RLE ``segmentation``)."""
        from loce.engine.evaluate import detections_to_results

        ids = self.category_ids.tolist()
        table = [0] * (int(self.labels.max()) if len(self) else 0)
        for label, cat in zip(self.labels.tolist(), ids):
            table[label - 1] = cat
        return detections_to_results(self.as_dict(), image_id, table, self.masks is not None)


def _device(device: str | torch.device) -> torch.device:
    from loce.engine.distributed import select_device

    if isinstance(device, torch.device):
        return device
    if device in ("auto", "cpu", "cuda"):
        return select_device(device)
    return torch.device(device)


class Detector:
    """A trained detector with its category table and test pipeline.

    Build it with :meth:`from_checkpoint`. Calling it on one image returns a
    :class:`DetectionResult`; on a list, a list. ``batch_size > 1`` runs several images per
    forward pass: faster on a GPU, but the images are padded to the largest of the batch,
    which changes features near their right and bottom edges slightly (the original tests
    one image at a time, docs/parity.md §4 #11).

    Args:
        model: a loce Mask R-CNN in eval mode.
        cfg: its config (test transforms and settings).
        category_ids: ``category_ids[j - 1]`` for label ``j``.
        category_names: names in the same order (None: the ids as text).
        device: where the model runs.
        with_masks: compute masks (False: boxes only, much faster at 300 detections).
    """

    def __init__(self, model: torch.nn.Module, cfg, category_ids: Sequence[int],
                 category_names: Sequence[str] | None = None, *,
                 device: str | torch.device = "cpu", with_masks: bool = True) -> None:
        from loce import build

        self.device = _device(device)
        self.model = model.eval().to(self.device)
        self.cfg = cfg
        self.category_ids = [int(c) for c in category_ids]
        self.category_names = ([str(n) for n in category_names] if category_names
                               else [str(c) for c in self.category_ids])
        self.with_masks = bool(with_masks)
        self.transforms = build.build_test_transforms(cfg)
        #: How image files are decoded ("pillow", or "opencv" as the original does).
        self.decoder = build.build_test_decoder(cfg)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | torch.device = "auto",
                        score_threshold: float | None = None, top_k: int | None = None,
                        with_masks: bool = True, amp: str | None = None,
                        overrides: Sequence[str] = (), config: str | None = None) -> Detector:
        """Load a checkpoint written by ``loce train`` or ``loce convert``.

        Args:
            path: the checkpoint.
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
            score_threshold: keep detections scoring above this (default: the checkpoint's
                ``model.test.score_thresh``, 1e-4 for the LVIS configs).
            top_k: detections kept per image (default ``model.test.detections_per_img``).
            with_masks: compute masks.
            amp: run inference under autocast, ``"bf16"`` or ``"fp16"`` (``"none"``: fp32;
                default: the checkpoint's ``model.test.amp``, off). Faster on GPUs; boxes,
                decoding and NMS stay float32, scores and masks move slightly.
            overrides: ``KEY=VALUE`` config changes, e.g. ``"model.parity.mask_paste=legacy"``.
            config: a config to use instead of the stored one.

        Raises:
            CheckpointError, ConfigError: the checkpoint or an override does not fit.
        """
        from loce.engine.checkpoint import load_trained_model

        extra = list(overrides)
        if amp is not None:
            extra.append(f"model.test.amp={amp}")
        if score_threshold is not None:
            extra.append(f"model.test.score_thresh={float(score_threshold)!r}")
        if top_k is not None:
            extra.append(f"model.test.detections_per_img={int(top_k)}")
        model, cfg, state = load_trained_model(path, extra, config)
        return cls(model, cfg, state["category_ids"], state.get("category_names"),
                   device=device, with_masks=with_masks)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, *, providers: Sequence[str] | None = None,
                  threads: int | None = None) -> OnnxDetector:
        """Load a file written by ``loce export``; it runs through onnxruntime.

        The returned :class:`OnnxDetector` is called like a :class:`Detector` and returns
        the same :class:`DetectionResult` objects; its test settings (resize, score
        threshold, detections per image, masks) are those the file was exported with.

        Args:
            path: the ``.onnx`` file.
            providers: onnxruntime execution providers (default: the CPU).
            threads: onnxruntime's intra-op threads (default: its own choice).

        Raises:
            LoceError: onnxruntime is not installed (``pip install 'loce[onnx]'``).
            CheckpointError: a file onnxruntime cannot load, or not written by loce.
        """
        return OnnxDetector(path, providers=providers, threads=threads)

    # ------------------------------------------------------------------ running the model

    @torch.no_grad()
    def detect_batch(self, images: Sequence[Tensor],
                     original_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Run the model on already transformed images (the one place it is called).

        Args:
            images: N ``[3, h, w]`` float tensors in ``[0, 1]``, resized by
                :attr:`transforms`.
            original_sizes: N ``(H, W)`` sizes before resizing.

        Returns:
            Per image ``{"boxes" [n, 4], "labels" [n], "scores" [n], "masks" [n, 1, H, W]}``
            in the original frame, on the model's device (no masks when ``with_masks`` is
            False).
        """
        heads = getattr(self.model, "roi_heads", None)
        previous = getattr(heads, "infer_masks", None)
        if previous is not None:
            heads.infer_masks = self.with_masks
        try:
            images = [im.to(self.device) for im in images]
            return self.model(images, original_image_sizes=[tuple(s) for s in original_sizes])
        finally:
            if previous is not None:
                heads.infer_masks = previous

    def prepare(self, image: Any) -> tuple[Tensor, tuple[int, int], str | None]:
        """``(model input [3, h, w] float, original (H, W), note)`` for one input."""
        rgb, note = to_rgb_array(image, self.decoder)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
        size = (int(tensor.shape[1]), int(tensor.shape[2]))
        resized, _ = self.transforms(tensor, {"orig_size": torch.tensor(size)})
        return resized, size, note

    def _result(self, det: dict[str, Tensor], size: tuple[int, int], note: str | None
                ) -> DetectionResult:
        labels = det["labels"].detach().cpu().long()
        table = torch.tensor(self.category_ids, dtype=torch.int64)
        masks = det.get("masks")
        if masks is not None and self.with_masks:
            masks = masks.detach().cpu()
            if masks.dtype != torch.bool:
                masks = masks >= self.cfg.model.test.mask_threshold
            masks = masks.reshape(len(labels), *size)
        else:
            masks = None
        return DetectionResult(
            boxes=det["boxes"].detach().cpu().float(),
            scores=det["scores"].detach().cpu().float(),
            labels=labels,
            category_ids=table[labels - 1] if len(labels) else labels.clone(),
            names=[self.category_names[j - 1] for j in labels.tolist()],
            masks=masks,
            image_size=size,
            note=note,
        )

    def __call__(self, images: Any, *, batch_size: int = 1
                 ) -> DetectionResult | list[DetectionResult]:
        """Detect objects in one image or a list of images (see the class docstring).

        Raises:
            DataError: an input that is not an image (one line naming it).
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[DetectionResult] = []
        for start in range(0, len(items), int(batch_size)):
            prepared = [self.prepare(x) for x in items[start:start + int(batch_size)]]
            dets = self.detect_batch([p[0] for p in prepared], [p[1] for p in prepared])
            results += [self._result(d, p[1], p[2]) for d, p in zip(dets, prepared)]
        return results[0] if single else results

    # ------------------------------------------------------------------ pictures

    def draw(self, result: DetectionResult | dict[str, Tensor], image: Any,
             out_path: str | os.PathLike | None = None, *, score_threshold: float = 0.3):
        """Draw boxes, masks and names on the original image; save it when ``out_path`` is given.

        Args:
            result: a :class:`DetectionResult` (or the model's output dict for one image).
            image: the image the result is for (any accepted input).
            out_path: where to write the picture (format from the suffix, e.g. ``.png``).
            score_threshold: draw detections scoring at least this.

        Returns:
            The picture (a PIL image).
        """
        from loce.engine.predict import draw_detections, save_picture

        rgb, _ = to_rgb_array(image)
        if isinstance(result, DetectionResult) and tuple(result.image_size) != rgb.shape[:2]:
            raise DataError(f"{describe_input(image)}: the image is {rgb.shape[1]}x{rgb.shape[0]} but "
                            f"the result is for a {result.image_size[1]}x{result.image_size[0]} "
                            "image; draw a result on the image it was computed for")
        det = result.as_dict() if isinstance(result, DetectionResult) else result
        picture = draw_detections(rgb, det, self.category_names, score_threshold)
        if out_path is not None:
            save_picture(picture, out_path)
        return picture


class OnnxDetector(Detector):
    """A file written by ``loce export``, run by onnxruntime (:meth:`Detector.from_onnx`).

    Images go into the graph decoded and unresized (it resizes, normalises and pads
    itself); everything else, results, drawing and ``loce predict``'s output files, is the
    :class:`Detector`'s. ``model`` and ``cfg`` are None.
    """

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        from loce.export.onnx import OnnxRunner

        self.runner = OnnxRunner(path, providers=providers, threads=threads)
        self.device = torch.device("cpu")
        self.model = None
        self.cfg = None
        self.category_ids = list(self.runner.category_ids)
        self.category_names = list(self.runner.category_names)
        self.with_masks = self.runner.with_masks
        self.transforms = None  # the graph resizes
        self.decoder = "pillow"  # as data.test_resize: torch, which the graph implements

    @torch.no_grad()
    def detect_batch(self, images: Sequence[Tensor],
                     original_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Run the graph on each image (``[3, H, W]`` float in ``[0, 1]`` or uint8, not
        resized; ``original_sizes`` must be their sizes). Returns :meth:`Detector.detect_batch`'s
        dicts on the CPU (``masks [n, 1, H, W]`` bool)."""
        out = []
        for image, size in zip(images, original_sizes):
            if tuple(image.shape[-2:]) != tuple(size):
                raise ValueError(f"an exported detector takes unresized images: got "
                                 f"{list(image.shape)} for the original size {tuple(size)}")
            if image.dtype != torch.uint8:
                image = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
            pixels = image.cpu().permute(1, 2, 0).contiguous().numpy()
            raw = self.runner.run(pixels)
            det = {k: torch.from_numpy(v) for k, v in raw.items()}
            if "masks" in det:
                det["masks"] = det["masks"][:, None]
            out.append(det)
        return out

    def prepare(self, image: Any) -> tuple[Tensor, tuple[int, int], str | None]:
        """``(image [3, H, W] uint8, (H, W), note)``: decoded, not resized."""
        rgb, note = to_rgb_array(image, self.decoder)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)
        return tensor, (int(tensor.shape[1]), int(tensor.shape[2])), note
