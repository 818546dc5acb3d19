"""``loce export``: a trained detector as one ONNX file, and that file run by onnxruntime.

The file takes one decoded RGB image and returns its detections (docs/deploy.md):

=========  ==============  =====================================================
name       type, shape     meaning
=========  ==============  =====================================================
image      uint8 [H, W, 3]  the input, any size
boxes      float32 [n, 4]  ``x1, y1, x2, y2`` in the input image's pixels
scores     float32 [n]     by decreasing score, the method's test-time scoring
labels     int64 [n]       1..K (``loce.category_ids`` names them)
masks      bool [n, H, W]  thresholded masks (Mask R-CNN, unless ``with_masks=False``)
=========  ==============  =====================================================

The graph is the trace of :class:`loce.export.graph.ImageToDetections` by PyTorch's
TorchScript-based exporter (``dynamo=False``: the torch.export-based one stops at the
data-dependent NMS). ``metadata_props`` hold the category table and where the file came
from (:data:`METADATA_KEYS`), so that labels can be named without the checkpoint.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loce.errors import CheckpointError, ConfigError, LoceError

__all__ = [
    "INSTALL_HINT",
    "METADATA_KEYS",
    "ExportedModel",
    "OnnxRunner",
    "check_exportable",
    "export_model",
    "export_onnx",
]

#: The one line printed when onnx or onnxruntime is missing.
INSTALL_HINT = "pip install 'loce[onnx]'"
#: ``metadata_props`` of an exported file (values are text; JSON where a list).
METADATA_KEYS = {
    "loce.category_ids": "JSON list: the dataset category id of label j at index j - 1",
    "loce.category_names": "JSON list: the category names in the same order",
    "loce.config": "the config name the model was trained with",
    "loce.version": "the loce version that exported the file",
    "loce.method": "the classification loss (model.roi.cls_loss) and any calibration",
    "loce.test_size": "JSON [short, max_size]: the test resize inside the graph",
    "loce.score_threshold": "detections score above this",
    "loce.detections_per_image": "at most this many detections",
    "loce.outputs": "JSON list of the output names",
}
#: Lowest opset with RoIAlign's half-pixel mode (the original's aligned RoIAlign).
MIN_OPSET = 16
DEFAULT_OPSET = 17


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise LoceError(f"{module} is not installed: {INSTALL_HINT}") from None


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        outputs: the output names in order.
        metadata: the ``metadata_props`` written.
    """

    path: Path
    outputs: tuple[str, ...]
    metadata: dict[str, str]


def _method(cfg) -> str:
    test = cfg.model.test
    method = cfg.model.roi.cls_loss
    if test.norcal_gamma is not None:
        method += f" + NorCal gamma={test.norcal_gamma:g}"
    if test.fracal_lambda is not None:
        method += f" + FRACAL lambda={test.fracal_lambda:g}"
    return method


def check_exportable(model: nn.Module, cfg) -> None:
    """Refuse, in one line naming it, what the exported graph would not compute.

    Raises:
        ConfigError: a classification loss without one of :mod:`loce.losses.scoring`'s
            test-time rules (a module from outside loce), a mask paste other than
            ``grid_sample``, or a model without RoI heads of loce's.
    """
    from loce.models.roi_heads import StepwiseRoIHeads

    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, StepwiseRoIHeads):
        raise ConfigError(f"cannot export {type(model).__name__}: not a loce detector "
                          "(its RoI heads are not loce's StepwiseRoIHeads)")
    loss = heads.cls_loss
    loss_name = type(loss).__name__
    if not (type(loss).__module__.startswith("loce.losses.") and callable(getattr(loss, "scores", None))) \
            and not isinstance(loss, nn.CrossEntropyLoss):  # fmt: skip
        raise ConfigError(f"cannot export the classification loss {loss_name}: its test-time "
                          "scoring is not one of loce.losses.scoring's rules")
    if cfg.model.detector == "mask_rcnn" and cfg.model.parity.mask_paste != "grid_sample":
        raise ConfigError(f"cannot export model.parity.mask_paste={cfg.model.parity.mask_paste}: "
                          "the graph pastes masks as grid_sample does; export with "
                          "--set model.parity.mask_paste=grid_sample")


def export_model(model: nn.Module, cfg, category_ids: Sequence[int],
                 category_names: Sequence[str] | None, out: str | os.PathLike, *,
                 with_masks: bool = True, opset: int = DEFAULT_OPSET,
                 candidates: int | None = None) -> ExportedModel:
    """Trace ``model`` behind the test pipeline and write it as ONNX (atomically).

    Args:
        model: a loce detector (moved to the CPU, float32, eval mode).
        cfg: its config (test resize, test settings, name).
        category_ids: the dataset category id of each label 1..K.
        category_names: their names (None: the ids as text).
        out: the ``.onnx`` file to write.
        with_masks: add the ``masks`` output (Mask R-CNN only).
        opset: ONNX opset, at least :data:`MIN_OPSET`.
        candidates: (proposal, class) pairs taken into NMS (default: 4x the detections per
            image, as eager inference's first try).

    Returns:
        An :class:`ExportedModel`.

    Raises:
        ConfigError: an opset below 16 or a model that cannot be exported (see
            :func:`check_exportable`).
        LoceError: onnx is not installed.
    """
    from loce import __version__
    from loce.export.graph import ImageToDetections
    from loce.fileio import atomic_write, check_output_file

    if int(opset) < MIN_OPSET:
        raise ConfigError(f"--opset {opset}: the graph needs opset >= {MIN_OPSET} "
                          "(RoIAlign with half-pixel coordinates)")
    onnx = _require("onnx")
    check_output_file(out, what="ONNX file")
    model = model.to("cpu").float().eval()
    check_exportable(model, cfg)
    heads = model.roi_heads
    heads.traced_candidates = int(candidates) if candidates else 4 * heads.detections_per_img
    graph = ImageToDetections(model, cfg.data.test_scale, cfg.data.test_max_size,
                              with_masks=with_masks,
                              mask_threshold=cfg.model.test.mask_threshold).eval()
    outputs = ("boxes", "scores", "labels") + (("masks",) if graph.with_masks else ())
    dynamic = {"image": {0: "H", 1: "W"}, **{name: {0: "n"} for name in outputs}}
    if graph.with_masks:
        dynamic["masks"] = {0: "n", 1: "H", 2: "W"}
    # Any image traces the same graph; a textured one keeps every branch busy.
    gen = torch.Generator().manual_seed(0)
    short = int(cfg.data.test_scale)
    example = torch.randint(0, 256, (short, short * 4 // 3, 3), generator=gen, dtype=torch.uint8)
    import io

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the eager-only branches
        torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=int(opset),
                          input_names=["image"], output_names=list(outputs),
                          dynamic_axes=dynamic)
    proto = onnx.load_from_string(buffer.getvalue())
    ids = [int(c) for c in category_ids]
    names = [str(n) for n in category_names] if category_names else [str(c) for c in ids]
    metadata = {
        "loce.category_ids": json.dumps(ids),
        "loce.category_names": json.dumps(names),
        "loce.config": str(cfg.name),
        "loce.version": __version__,
        "loce.method": _method(cfg),
        "loce.test_size": json.dumps([int(cfg.data.test_scale), int(cfg.data.test_max_size)]),
        "loce.score_threshold": repr(float(cfg.model.test.score_thresh)),
        "loce.detections_per_image": str(int(cfg.model.test.detections_per_img)),
        "loce.outputs": json.dumps(list(outputs)),
    }
    onnx.helper.set_model_props(proto, metadata)
    with atomic_write(out, "wb", what="ONNX file") as f:
        f.write(proto.SerializeToString())
    return ExportedModel(Path(out), outputs, metadata)


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, with_masks: bool = True,
                opset: int = DEFAULT_OPSET, overrides: Sequence[str] = (),
                config: str | None = None, candidates: int | None = None) -> ExportedModel:
    """Export a checkpoint written by ``loce train`` or ``loce convert`` (``loce export``).

    The graph resizes as ``data.test_resize: torch`` does (Pillow decode, float bilinear
    resize), whatever the checkpoint's config says; ``overrides`` change test settings
    (``model.test.score_thresh=0.05``, ``model.test.norcal_gamma=0.5``, ...) before the
    export. See :func:`export_model` for the other arguments.
    """
    from loce.engine.checkpoint import load_trained_model

    model, cfg, state = load_trained_model(checkpoint, list(overrides), config)
    return export_model(model, cfg, state["category_ids"], state.get("category_names"), out,
                        with_masks=with_masks, opset=opset, candidates=candidates)


class OnnxRunner:
    """An exported file in an onnxruntime session (CPU unless ``providers`` say otherwise).

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        threads: intra-op threads (None: onnxruntime's default).

    Raises:
        LoceError: onnxruntime is not installed (one line: how to install it).
        CheckpointError: a file onnxruntime cannot load, or without loce's metadata.
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime raises its own exception types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{self.path}: onnxruntime cannot load it ({first[:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "loce.category_ids" not in meta:
            raise CheckpointError(f"{self.path}: not a file written by `loce export` "
                                  "(no loce.category_ids in its metadata)")
        self.metadata: dict[str, str] = dict(meta)
        self.category_ids: list[int] = json.loads(meta["loce.category_ids"])
        self.category_names: list[str] = json.loads(meta["loce.category_names"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.with_masks = "masks" in self.outputs

    def run(self, image: Any) -> dict[str, Any]:
        """``image`` ``[H, W, 3]`` uint8 (NumPy) -> ``{"boxes", "scores", "labels"[, "masks"]}``
        NumPy arrays (masks ``[n, H, W]`` bool)."""
        return dict(zip(self.outputs, self.session.run(None, {"image": image})))
