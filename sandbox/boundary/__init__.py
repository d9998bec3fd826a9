"""The security boundary: the restricted REPL's host side (:mod:`.repl`) and everything its worker
process runs (the compiler, the guards, the frame channel, the OS confinement, the outbound encoder).

This package imports only the standard library, RestrictedPython, the kernel bindings the
confinement uses (pyseccomp, landlockpy) and itself, always by relative import, so that a worker
loads it alone (:mod:`.loader`) and nothing of the engine, the LM clients or the frameworks runs in
the process that executes untrusted code. ``tests/test_layout.py`` holds it to that.
"""
