"""``python -m anyio_iocp``: see :mod:`anyio_iocp._cli`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
