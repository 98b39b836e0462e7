"""Pydantic models of every bus request and reply; `natrium schemas export` writes JSON Schema."""
