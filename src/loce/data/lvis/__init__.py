"""LVIS and COCO annotation files: loading, validation, indexing and the training dataset.

Three layers, each usable on its own:

* :mod:`.validate` (:func:`load_lvis_json`, :func:`validate_lvis`) reads and checks an
  annotation file or an already-parsed dict, without torch, so evaluation code can reuse it;
  :mod:`.columns` holds its per-field readers.
* :mod:`.index` (:class:`LVISIndex`) indexes a validated file once, in linear time, into a few
  numpy arrays.
* :mod:`.dataset` (:class:`LVISDataset`) turns an index plus an image folder into
  ``(image, target)`` items.

Labels are ``1..K`` for ``K`` foreground classes; background is label 0.
"""

from loce.data.image_io import read_rgb
from loce.data.lvis.dataset import LVISDataset
from loce.data.lvis.index import LVISIndex
from loce.data.lvis.validate import load_lvis_json, validate_lvis

__all__ = [
    "LVISDataset",
    "LVISIndex",
    "load_lvis_json",
    "read_rgb",
    "validate_lvis",
]
