"""The application: the ``rlm`` command (:mod:`.cli`), its progress display, the HTML trace report,
and the long-context benchmark suite ``rlm bench`` runs (:mod:`.bench`). Only this package may
import the adapters (``rlm_graph``, ``rlm_dspy``).
"""
