"""The pub/sub building block on JetStream streams."""
