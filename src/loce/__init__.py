"""loce: LOCE and a long-tailed object detection toolkit on PyTorch/torchvision.

Heavy submodules (torch, torchvision) are imported lazily so that light commands such as
``loce eval`` start quickly.
"""

from loce.errors import LoceError

__version__ = "0.1.0.dev0"

__all__ = ["LoceError", "__version__"]
