"""The engine interface: what the stream layer asks of an engine, the settings
types engines need, the completion-operation base, trace and statistics."""
