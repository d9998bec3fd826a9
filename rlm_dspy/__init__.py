"""DSPy adapter for the RLM runtime (see issue #3; built on ``sandbox``)."""
