"""The stream layer: AnyIO's TCP/UNIX streams and listeners, datagrams and the
idle gate, written once against the engine interface."""

# Modules on the path of every message import ``from trio import lowlevel``
# and call ``lowlevel.checkpoint_if_cancelled()``, never
# ``trio.lowlevel.checkpoint_if_cancelled()``: the ``trio`` package has a
# module-level ``__getattr__`` (for its deprecated names), and CPython 3.11
# and 3.12 do not cache attribute lookups on such a module, so each
# ``trio.lowlevel`` costs a full lookup (26 ns against 12 ns here,
# docs/performance.md, thirteenth pass).
