"""`python -m tools.fuzz`: see tools/fuzz/fuzz.py."""

import sys

from tools.fuzz.fuzz import main

if __name__ == "__main__":
    sys.exit(main())
