"""The RLM engine both adapters run on: the session over the REPL, the host functions cells call,
budgets, the parsing of replies, prompts, evaluator checkpoints and refinement, compaction,
multi-turn state, the trajectory and its spans.

It builds on :mod:`sandbox.boundary` and :mod:`sandbox.lm`, and never imports an adapter or a
framework (LangGraph, LangChain, DSPy): ``tests/test_layout.py`` holds it to that.
"""
