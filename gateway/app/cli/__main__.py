"""`python -m gateway.app.cli ...`, as the `gateway` console script."""

import sys

from gateway.app.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
