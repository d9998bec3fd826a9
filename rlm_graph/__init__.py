"""LangGraph adapter: the RLM as a compiled graph (``create_rlm_graph``) or a node (``create_rlm_node``)."""

from rlm_graph.chat_model import ChatModelClient
from rlm_graph.contexts import get_context, put_context
from rlm_graph.graph import RLMGraph, RLMInput, RLMOutput, RLMState, create_rlm_graph
from rlm_graph.node import create_rlm_node

__all__ = ["ChatModelClient", "RLMGraph", "RLMInput", "RLMOutput", "RLMState", "create_rlm_graph", "create_rlm_node",
           "get_context", "put_context"]
