"""The stream layer: AnyIO's TCP/UNIX streams and listeners, datagrams and the
idle gate, written once against the engine interface."""
