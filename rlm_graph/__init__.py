"""LangGraph adapter for the RLM runtime (see issue #4; built on ``sandbox``)."""
