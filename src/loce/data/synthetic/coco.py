"""The synthetic dataset as a user's COCO file: the shape most people's own data has.

:func:`to_coco` turns a split's LVIS v1 dict into a COCO instance file with what real
COCO-format data brings and LVIS files lack or never have:

* images named by ``file_name`` (``train/000000000001.jpg``, relative to the dataset
  folder), no federated lists, categories without ``frequency``/``image_count``;
* category ids that are not contiguous (``3 * id + 2``: 5, 8, 11, ...);
* one image without annotations, a grey PNG in a nested folder
  (``<split>/extra/empty.png``);
* one crowd annotation (``iscrowd: 1``, the split's first annotation);
* with ``boxes_only``, no ``segmentation`` at all (detection-only data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["coco_category_id", "to_coco"]


def coco_category_id(lvis_id: int) -> int:
    """The COCO file's id of synthetic category ``lvis_id`` (non-contiguous on purpose)."""
    return 3 * int(lvis_id) + 2


def to_coco(data: dict[str, Any], split: str, out_dir: Path, *, boxes_only: bool,
            empty_image_id: int) -> dict[str, Any]:
    """A COCO instance file for one split (see the module docstring); writes its empty image.

    Args:
        data: the split's LVIS v1 dict (:func:`loce.data.synthetic.write.generate`).
        split: "train" or "val" (the image folder).
        out_dir: the dataset folder, where ``<split>/extra/empty.png`` is written.
        boxes_only: leave out every ``segmentation``.
        empty_image_id: id of the image without annotations (unused by ``data``).
    """
    from PIL import Image

    size = (data["images"][0]["width"], data["images"][0]["height"])
    empty_name = f"{split}/extra/empty.png"
    (out_dir / empty_name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 128).save(out_dir / empty_name)
    images = [{"id": im["id"], "width": im["width"], "height": im["height"],
               "file_name": "/".join(im["coco_url"].rsplit("/", 2)[-2:]), "license": 1}
              for im in data["images"]]
    images.append({"id": empty_image_id, "width": size[0], "height": size[1],
                   "file_name": empty_name, "license": 1})
    annotations = []
    for i, ann in enumerate(data["annotations"]):
        new = {**ann, "category_id": coco_category_id(ann["category_id"]), "iscrowd": int(i == 0)}
        if boxes_only:
            del new["segmentation"]
        annotations.append(new)
    categories = [{"id": coco_category_id(c["id"]), "name": c["name"],
                   "supercategory": c["name"].rsplit(" ", 1)[-1]} for c in data["categories"]]
    return {"info": data["info"], "licenses": data["licenses"], "images": images,
            "annotations": annotations, "categories": categories}
