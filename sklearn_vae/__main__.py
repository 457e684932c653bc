"""``python -m sklearn_vae``: the same command line as ``sklearn-vae``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
