"""Every reach into Trio's and AnyIO's private internals, each checked against
the versions it was written for."""
