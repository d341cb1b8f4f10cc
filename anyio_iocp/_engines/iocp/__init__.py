"""The IOCP engine (Windows): overlapped Winsock on Trio's completion port."""
