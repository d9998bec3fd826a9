"""Runnable recipes, on the embedded model by default; tests/test_cookbook.py runs each on scripted models."""
