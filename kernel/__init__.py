"""natrium's microkernel: bus connection, subjects, codec, service base, errors, tracing,
component loading and the embedded nats-server. No building-block code lives here."""

__version__ = "0.1.0"
