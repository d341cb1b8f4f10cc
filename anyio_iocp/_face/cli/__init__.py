"""The command line: ``python -m anyio_iocp``."""
