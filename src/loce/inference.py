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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loce.errors import DataError

__all__ = ["MAX_PIXELS", "DetectionResult", "Detector", "read_image", "to_rgb_array"]

#: Image files with more pixels than this are refused (Pillow's own default limit, about
#: 89.5 megapixels; a 14000 x 14000 image has 196).
MAX_PIXELS = 89_478_485


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"the {type(source).__name__} input"


def _mode_note(mode: str) -> str | None:
    """The note for an image file of Pillow mode ``mode`` (None for RGB)."""
    if mode == "RGB":
        return None
    what = {"L": "grey", "1": "black-and-white", "LA": "grey + alpha", "RGBA": "RGBA",
            "P": "palette", "PA": "palette + alpha", "CMYK": "CMYK",
            "I;16": "16-bit grey", "I": "32-bit grey", "F": "float grey"}.get(mode, mode)
    return f"{what} image converted to RGB"


def _from_pil(im, where: str) -> tuple[np.ndarray, str | None]:
    if im.width == 0 or im.height == 0:
        raise DataError(f"{where}: the image is {im.width}x{im.height} pixels (a zero side)")
    note = _mode_note(im.mode)
    if note is not None:
        if im.mode in ("I;16", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode == "I;16" else max(float(arr.max()), 1.0)
            grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2), note
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8), note


def read_image(path: str | os.PathLike, decoder: str = "pillow") -> tuple[np.ndarray, str | None]:
    """Decode an image file to RGB.

    Args:
        path: the image file.
        decoder: "pillow", or "opencv" as the original's loader decodes
            (:func:`loce.data.image_io.read_rgb`; the config's choice is
            :func:`loce.build.build_test_decoder`).

    Returns:
        ``(image [H, W, 3] uint8, note)``; ``note`` says when a grey, alpha or palette image
        was converted to RGB (None otherwise).

    Raises:
        DataError: not a readable image, a zero side, or more than Pillow's
            decompression-bomb limit (:data:`MAX_PIXELS` by default).
    """
    from PIL import Image, UnidentifiedImageError

    from loce.data.image_io import check_decoder, check_pixel_limit, read_rgb

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    if check_decoder(decoder) != "pillow":
        # The pixels come from the configured decoder, with its own pixel-limit and
        # empty-image checks (OpenCV replicates grey and drops alpha as Pillow's conversion
        # does); Pillow's header, where it can read one, gives the note.
        rgb = read_rgb(path, decoder)  # type: ignore[arg-type]
        try:
            with Image.open(path) as im:
                return rgb, _mode_note(im.mode)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return rgb, None
    check_pixel_limit(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _from_pil(im, str(path))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read the image ({err}); give a JPEG, PNG, BMP or "
                        "WebP file") from None


def to_rgb_array(image: Any, decoder: str = "pillow") -> tuple[np.ndarray, str | None]:
    """Any accepted input as ``(RGB [H, W, 3] uint8, note)`` (see the module docstring).

    Accepted: a path, a PIL image, an ``[H, W, 3]`` (or ``[H, W]`` grey, ``[H, W, 4]`` RGBA)
    uint8 array, or a ``[3, H, W]`` (``[1, H, W]``, ``[4, H, W]``) tensor, float in ``[0, 1]``
    or uint8.

    Raises:
        DataError: an input of another type, shape or dtype, or with a zero side.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, decoder)
    where = _describe(image)
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            return _from_pil(image, where)
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            hint = " (an [H, W, 3] tensor: pass image.permute(2, 0, 1))" if (
                t.dim() == 3 and t.shape[-1] in (1, 3, 4)) else ""
            raise DataError(f"{where}: expected a [3, H, W] tensor, got shape {list(t.shape)}{hint}")
        if t.dtype == torch.uint8:
            arr = t.permute(1, 2, 0).numpy()
        elif t.is_floating_point():
            arr = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        else:
            raise DataError(f"{where}: expected a float tensor in [0, 1] or uint8, got {t.dtype}")
        return _from_array(arr, where, channels_last=True)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise DataError(f"{where}: expected uint8 values 0-255, got {image.dtype}; convert "
                            "with (a * 255).round().astype(np.uint8) if it holds 0-1 floats")
        return _from_array(image, where, channels_last=False)
    raise DataError(f"{where}: expected a file path, a PIL image, an HxWx3 uint8 array or a "
                    "[3, H, W] tensor")


def _from_array(arr: np.ndarray, where: str, *, channels_last: bool) -> tuple[np.ndarray, str | None]:
    shape = "[C, H, W]" if channels_last else "[H, W, 3]"
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(f"{where}: expected a {shape} image, got shape {list(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{where}: the image is {arr.shape[1]}x{arr.shape[0]} pixels (a zero side)")
    note = None
    if arr.shape[2] == 1:
        arr, note = np.repeat(arr, 3, axis=2), "grey image converted to RGB"
    elif arr.shape[2] == 4:
        arr, note = arr[..., :3], "RGBA image converted to RGB (alpha dropped)"
    return np.ascontiguousarray(arr), note


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
    one image at a time, docs/mmdet-parity.md §4 #11).

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
                        with_masks: bool = True, overrides: Sequence[str] = (),
                        config: str | None = None) -> Detector:
        """Load a checkpoint written by ``loce train`` or ``loce convert``.

        Args:
            path: the checkpoint.
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
            score_threshold: keep detections scoring above this (default: the checkpoint's
                ``model.test.score_thresh``, 1e-4 for the LVIS configs).
            top_k: detections kept per image (default ``model.test.detections_per_img``).
            with_masks: compute masks.
            overrides: ``KEY=VALUE`` config changes, e.g. ``"model.parity.mask_paste=legacy"``.
            config: a config to use instead of the stored one.

        Raises:
            CheckpointError, ConfigError: the checkpoint or an override does not fit.
        """
        from loce.engine.checkpoint import load_trained_model

        extra = list(overrides)
        if score_threshold is not None:
            extra.append(f"model.test.score_thresh={float(score_threshold)!r}")
        if top_k is not None:
            extra.append(f"model.test.detections_per_img={int(top_k)}")
        model, cfg, state = load_trained_model(path, extra, config)
        return cls(model, cfg, state["category_ids"], state.get("category_names"),
                   device=device, with_masks=with_masks)

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
            raise DataError(f"{_describe(image)}: the image is {rgb.shape[1]}x{rgb.shape[0]} but "
                            f"the result is for a {result.image_size[1]}x{result.image_size[0]} "
                            "image; draw a result on the image it was computed for")
        det = result.as_dict() if isinstance(result, DetectionResult) else result
        picture = draw_detections(rgb, det, self.category_names, score_threshold)
        if out_path is not None:
            save_picture(picture, out_path)
        return picture
