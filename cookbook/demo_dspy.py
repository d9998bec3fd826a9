"""The DSPy recipes' LMs from their command line (``cookbook.demo.model_arguments``).

``local`` (the default) is the embedded model, :func:`rlm_dspy.local_lm`; any other string is a
``dspy.LM`` on ``--api-base`` when given.
"""

from __future__ import annotations

import argparse

import dspy

from cookbook.demo import LOCAL
from rlm_dspy import local_lm


def named_lm(model: str, api_base: str | None = None) -> dspy.LM:
    """The ``dspy.LM`` a model string names: the embedded model for ``local``."""
    return local_lm() if model == LOCAL else dspy.LM(model, api_base=api_base)


def lms(args: argparse.Namespace, lm: dspy.BaseLM | None = None,
        sub_lm: dspy.BaseLM | None = None) -> tuple[dspy.BaseLM, dspy.BaseLM]:
    """(root, sub) for a recipe: ``lm`` and ``sub_lm`` where given, else the ones ``--model`` and
    ``--sub-model`` name (the sub-LM defaults to the root's)."""
    root = lm if lm is not None else named_lm(args.model, args.api_base)
    if sub_lm is None:
        sub_lm = named_lm(args.sub_model, args.api_base) if args.sub_model else root
    return root, sub_lm
