"""``python -m anyio_iocp``: see :mod:`anyio_iocp._face.cli.main`."""

import sys

from anyio_iocp._face.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
