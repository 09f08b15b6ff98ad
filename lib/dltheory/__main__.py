"""``python -m dltheory``: the book's command line (:mod:`dltheory.machinery.cli`)."""

import sys

from dltheory.machinery.cli import main

if __name__ == "__main__":
    sys.exit(main())
