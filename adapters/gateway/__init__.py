"""Dapr's HTTP API v1.0 on top of the bus."""
