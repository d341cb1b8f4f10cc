"""Every reach into Trio's and AnyIO's private internals, each checked against
the versions it was written for (and the one into CPython's socket object,
``cpython_socket``)."""
