"""Runnable recipes; each also runs as a test (tests/test_cookbook.py)."""
