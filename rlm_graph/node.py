"""``create_rlm_node``: the RLM as one node of a parent graph whose state uses its own keys."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer

from rlm_graph.graph import PARENT_STREAM_WRITER, create_rlm_graph


def node_config(config: RunnableConfig, step_limit: int) -> RunnableConfig:
    """``config`` for the RLM graph run by a node: its stream events go to this node's stream, and
    its recursion limit is its own. The parent's ``recursion_limit`` (LangChain's 25 unless set)
    counts the parent's steps, of which this node is one; the RLM's loop is bounded by its
    ``max_iterations`` and budget, so the node gives it room for every iteration (``step_limit``)."""
    config = {**config, "recursion_limit": max(step_limit, config.get("recursion_limit") or 0)}
    try:
        writer = get_stream_writer()
    except RuntimeError:  # not running inside a graph: nothing to forward to
        return config
    return {**config, "configurable": {**config.get("configurable", {}), PARENT_STREAM_WRITER: writer}}


def create_rlm_node(model: Any, *, query_key: str = "query", context_key: str = "context",
                    output_key: str = "answer", details_key: str | None = None,
                    **kwargs: Any) -> RunnableLambda:
    """The RLM as one node of a parent graph: it reads ``state[query_key]`` and
    ``state[context_key]`` and writes ``{output_key: answer}`` (plus ``{details_key: {"usage",
    "iterations", "stop_reason"}}`` when ``details_key`` is given), in the formats of
    :func:`create_rlm_graph`'s input and output.

    The node forwards its ``config``, so callbacks and review interrupts reach the parent graph;
    it works under ``invoke``, ``ainvoke``, ``stream`` and ``astream``. Note the parent's own
    state (with the context in it) is checkpointed by the parent's checkpointer. The RLM runs
    under a recursion limit of its own, which its ``max_iterations`` cannot outgrow (the parent's
    ``recursion_limit`` counts the parent's steps, of which the node is one).

    Streaming: the RLM's events (``{"kind": "iteration" | "lm_call" | "cell" | "sub_call" | ...,
    "depth", "t", ...}``, the stream format of :func:`create_rlm_graph`) are written to the node's
    own custom stream, so a parent streaming with ``stream_mode="custom"`` gets them as it gets
    any node's, with or without ``subgraphs=True`` (with it, namespaced by this node). A graph
    from :func:`create_rlm_graph` added to a parent directly is a LangGraph subgraph instead:
    its events reach the parent only with ``subgraphs=True``.

    Args:
        model: the root LM, as :func:`create_rlm_graph` takes it.
        query_key: the parent state's key holding the query.
        context_key: the parent state's key holding the context.
        output_key: the key the answer is written to.
        details_key: if given, the key ``usage``, ``iterations`` and ``stop_reason`` are written to.
        **kwargs: the other options of :func:`create_rlm_graph` (``sub_model``, ``budget``,
            ``review``, ``sandbox_options``...).

    Returns:
        A ``RunnableLambda`` to add to the parent graph with ``add_node``.

    Raises:
        KeyError: when it runs, the state has no ``query_key`` or ``context_key``.
    """
    graph = create_rlm_graph(model, **kwargs)

    def rlm_input(state: Any) -> dict[str, Any]:
        for key in (query_key, context_key):
            if key not in state:
                raise KeyError(f"the RLM node reads state[{key!r}], which this state does not have; "
                               f"set query_key=/context_key= to the keys your state uses")
        return {"query": state[query_key], "context": state[context_key]}

    def rlm_output(result: dict[str, Any]) -> dict[str, Any]:
        update = {output_key: result.get("answer")}
        if details_key is not None:
            update[details_key] = {k: result.get(k) for k in ("usage", "iterations", "stop_reason")}
        return update

    def run(state: Any, config: RunnableConfig) -> dict[str, Any]:
        return rlm_output(graph.invoke(rlm_input(state), node_config(config, graph.step_limit)))

    async def arun(state: Any, config: RunnableConfig) -> dict[str, Any]:
        return rlm_output(await graph.ainvoke(rlm_input(state), node_config(config, graph.step_limit)))

    return RunnableLambda(run, afunc=arun, name=graph.name)
