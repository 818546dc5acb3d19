"""A synthetic long-tailed instance-segmentation dataset in LVIS v1 format.

The project's embedded default dataset: the demo, the tests and the long-tail benchmark run on
it, so it is built to make long-tail methods *matter*:

* families of confusable (shape, colour, pattern) classes, each family holding a frequent, a
  common and a rare class (:mod:`.plan`);
* a real long tail on train, with the r/c/f thresholds scaled to the dataset (:mod:`.config`),
  and a class-balanced val split (:mod:`.plan`);
* cluttered photographic backgrounds and occluding objects with exact visible masks
  (:mod:`.render`, :mod:`.polygons`);
* exhaustive annotation with honest ``neg_category_ids``, written as LVIS v1 files
  (:mod:`.write`);
* deterministic: the output is byte-identical for a seed.

Modules: :mod:`.config` (settings, presets, thresholds), :mod:`.plan` (categories and what each
image holds), :mod:`.shapes` (family shapes), :mod:`.render` (one image), :mod:`.polygons`
(masks to polygons), :mod:`.write` (the dataset on disk and its class-frequency summary).
"""

from loce.data.synthetic.config import PRESETS, SynthConfig, frequency_thresholds
from loce.data.synthetic.plan import (
    COLOURS,
    PATTERNS,
    DatasetPlan,
    ImagePlan,
    SynthCategory,
    make_categories,
    plan_dataset,
)
from loce.data.synthetic.polygons import mask_to_polygons
from loce.data.synthetic.render import RenderedImage, render_image
from loce.data.synthetic.shapes import SHAPES
from loce.data.synthetic.write import class_frequency_summary, format_summary, generate

__all__ = [
    "COLOURS",
    "PATTERNS",
    "PRESETS",
    "SHAPES",
    "DatasetPlan",
    "ImagePlan",
    "RenderedImage",
    "SynthCategory",
    "SynthConfig",
    "class_frequency_summary",
    "format_summary",
    "frequency_thresholds",
    "generate",
    "make_categories",
    "mask_to_polygons",
    "plan_dataset",
    "render_image",
]
