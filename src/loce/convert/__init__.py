"""Checkpoints of other projects: MMDetection 2.x Mask R-CNN to loce and back.

See :mod:`loce.convert.mmdet_checkpoint` (the conversion), :mod:`loce.convert.mmcv_config`
(reading MMDetection config text without executing it) and :mod:`loce.convert.mmdet_spec`
(what such a config says in loce's terms).
"""

from loce.convert.mmdet_checkpoint import (
    ConversionResult,
    loce_config_name,
    loce_to_mmdet,
    mmdet_config_text,
    mmdet_to_loce,
    read_checkpoint,
)

__all__ = ["ConversionResult", "loce_config_name", "loce_to_mmdet", "mmdet_config_text",
           "mmdet_to_loce", "read_checkpoint"]
