"""The io_uring engine (Linux)."""
