"""DSPy adapter: ``RLM`` (a drop-in for ``dspy.RLM``) and ``RestrictedPythonInterpreter`` (for ``dspy.RLM`` itself)."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # dspy imports litellm

from rlm_dspy.interpreter import RestrictedPythonInterpreter  # noqa: E402
from rlm_dspy.lm import DSPyLMClient, local_lm, router_lm  # noqa: E402
from rlm_dspy.rlm import RLM, RLMSession  # noqa: E402

__all__ = ["DSPyLMClient", "RLM", "RLMSession", "RestrictedPythonInterpreter", "local_lm", "router_lm"]
