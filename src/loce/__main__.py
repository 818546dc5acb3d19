"""``python -m loce`` is the same as the ``loce`` command (and works under ``torchrun``)."""

import sys

from loce.cli import main

if __name__ == "__main__":
    sys.exit(main())
