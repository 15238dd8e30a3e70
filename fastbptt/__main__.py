"""``python -m fastbptt``: the command line of ``fastbptt.cli``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
