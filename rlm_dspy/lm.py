"""DSPy language models under the runtime's budget ledger.

Sub-calls (``llm_query``...) go through :class:`DSPyLMClient`, an
:class:`~sandbox.lm.clients.LMClient` over a ``dspy.LM``. The root's calls stay DSPy
predictor calls (so optimizers can tune them); :func:`metered_predict` reserves
budget from the exact prompt the adapter will send (formatted once: the call sends
those very messages) and commits the usage DSPy tracked. :func:`local_lm` is a ``dspy.LM`` for the embedded local model.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Callable
from typing import Any

import dspy
from dspy import lm15

from sandbox.engine.budget import Budget, BudgetExceeded, Reservation
from sandbox.lm.aio import CallTimedOut, call_with_timeout, in_own_thread
from sandbox.lm.clients import (LOCAL_MODEL, ROOT_MAX_TOKENS, Completion, Messages, check_held, completion_from_response,
                        estimate_prompt_tokens, litellm_input_tokens, price_usd)
from sandbox.lm.local import local_endpoint
from sandbox.lm.router import RouterClient, is_router

LOCAL_MAX_TOKENS = 1024  # local_lm's reply cap: the embedded model's window is 8,192 tokens, prompt included


def local_lm(**kwargs: Any) -> dspy.LM:
    """A ``dspy.LM`` for the embedded model: the one ``rlm serve`` keeps warm, else one started for
    this process (see :func:`sandbox.lm.local.local_endpoint`).

    It uses DSPy's litellm engine, which sends ``max_tokens`` (the default engine sends
    ``max_completion_tokens``, which llama.cpp ignores), and a placeholder API key.

    Args:
        **kwargs: ``dspy.LM`` options (``temperature``, ``cache``...); ``max_tokens`` defaults to 1024.

    Returns:
        The LM, e.g. for ``dspy.configure(lm=local_lm())`` or ``rlm_dspy.RLM(..., sub_lm=local_lm())``.

    Raises:
        sandbox.lm.local.LocalModelError: the embedded model is not installed or failed to start.
    """
    endpoint = local_endpoint()
    options = {"engine": "litellm", "max_tokens": LOCAL_MAX_TOKENS, **kwargs}
    return dspy.LM(endpoint.model, api_base=endpoint.api_base, api_key=endpoint.api_key, **options)


def as_dspy_lm(lm: Any) -> Any:
    """``lm`` as a ``dspy.LM`` where it names one another way: ``"local"`` (the embedded model,
    :func:`local_lm`) or a one-group ``litellm.Router`` (:func:`router_lm`); anything else as it is."""
    if isinstance(lm, str) and lm == LOCAL_MODEL:
        return local_lm()
    return router_lm(lm) if is_router(lm) else lm


def resolve_lm(lm: Any, what: str) -> dspy.BaseLM:
    """``lm`` or the configured ``dspy.settings.lm``; a clear error when there is neither."""
    lm = lm if lm is not None else dspy.settings.lm
    if lm is None:
        raise dspy.LMNotConfiguredError(f"No LM for the {what}: call dspy.configure(lm=dspy.LM(...)) "
                                        f"or pass one to rlm_dspy.RLM")
    if not isinstance(lm, dspy.BaseLM):
        raise TypeError(f"the {what} must be a dspy.LM (or dspy.BaseLM), got {type(lm).__name__}")
    return lm


def reply_bound(predictor: dspy.Predict, lm: dspy.BaseLM) -> dict[str, int]:
    """The ``config`` to add to a root call so its reply has a bounded length: empty when the
    predictor or the LM bounds it, or when DSPy manages the bound (OpenAI reasoning models).

    Without one, an OpenAI-compatible local server (llama.cpp) writes until its window is full:
    minutes for one reply of a small model.
    """
    lm_kwargs = getattr(lm, "kwargs", {}) or {}
    settings = {**lm_kwargs, **predictor.config}
    if settings.get("max_tokens") or settings.get("max_completion_tokens") or "max_completion_tokens" in lm_kwargs:
        return {}
    return {"max_tokens": ROOT_MAX_TOKENS}


def max_output_tokens(predictor: dspy.Predict, lm: dspy.BaseLM) -> int:
    """The most tokens a reply of ``predictor`` on ``lm`` may have, as sent (see :func:`reply_bound`)."""
    settings = {**(getattr(lm, "kwargs", {}) or {}), **predictor.config, **reply_bound(predictor, lm)}
    return int(settings.get("max_tokens") or settings.get("max_completion_tokens") or ROOT_MAX_TOKENS)


def _usage(tracker: Any) -> dict[str, tuple[int, int]]:
    """(prompt, completion) tokens per model, from a ``dspy.track_usage`` tracker."""
    return {str(model): (int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
            for model, u in tracker.get_total_tokens().items()}


class DSPyLMClient:
    """A ``dspy.LM`` behind :class:`~sandbox.lm.clients.LMClient`, reporting the usage DSPy tracked.

    With ``lm=None`` (none configured) every call fails with ``dspy.LMNotConfiguredError``, as
    ``dspy.RLM``'s ``llm_query`` does: the cell sees the error, the run goes on.
    """

    def __init__(self, lm: dspy.BaseLM | None):
        if lm is not None and not isinstance(lm, dspy.BaseLM):
            raise TypeError(f"the sub-LM must be a dspy.LM (or dspy.BaseLM), got {type(lm).__name__}")
        self.lm = lm
        self.model = str(lm.model) if lm is not None else "unconfigured"
        # The LM's settings (temperature...), so the sub-call cache tells differently-set LMs apart.
        self.completion_kwargs = dict(getattr(lm, "kwargs", {}) or {})

    async def acomplete(self, messages: Messages, *, max_tokens: int) -> Completion:
        if self.lm is None:
            raise dspy.LMNotConfiguredError("No LM configured. Use dspy.configure(lm=...) or pass sub_lm to RLM.")
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
        turns = tuple((lm15.Message.assistant if m["role"] == "assistant" else lm15.Message.user)(m["content"])
                      for m in messages if m["role"] != "system")
        request = lm15.Request(model=self.model, messages=turns, system=system,
                               config=lm15.Config(max_tokens=max_tokens))
        # The LM's blocking call on a thread of its own: one hop per call, where DSPy's async
        # path hops to the loop's default executor several times a call, and a wide fan-out queues there.
        response = await in_own_thread(self.lm, request)
        usage = response.usage
        return Completion(text=response.text, prompt_tokens=int(usage.input_tokens or 0) if usage else 0,
                          completion_tokens=int(usage.output_tokens or 0) if usage else 0, model=self.model)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return price_usd(self.model, prompt_tokens, completion_tokens)

    def input_window(self) -> int | None:
        """The model's input window in tokens from litellm's local map (DSPy names models the
        way litellm does); ``None`` when the map does not list it."""
        return litellm_input_tokens(self.model)


class RouterEngine:
    """DSPy's engine API (``dspy.LM(engine=...)``) over a ``litellm.Router``: each call goes to the
    router's model group, with its retries, cooldowns and fallbacks. Build one with :func:`router_lm`."""

    def __init__(self, client: RouterClient):
        self.client = client

    def _arguments(self, request: lm15.Request) -> dict[str, Any]:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(part, "text", "") or "" for part in request.system or ())
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": message.role, "content": message.text or ""} for message in request.messages]
        config = request.config
        settings = {"temperature": config.temperature, "top_p": config.top_p, "stop": list(config.stop) or None}
        return {"model": self.client.model, "messages": messages,
                "max_tokens": config.max_tokens or ROOT_MAX_TOKENS, **self.client.completion_kwargs,
                **{key: value for key, value in settings.items() if value is not None}}

    def _response(self, response: Any) -> lm15.Response:
        completion = completion_from_response(response, self.client.model)
        return lm15.Response(id=getattr(response, "id", None), model=self.client.model,
                             message=lm15.Message.assistant(completion.text), finish_reason="stop",
                             usage=lm15.Usage(input_tokens=completion.prompt_tokens,
                                              output_tokens=completion.completion_tokens,
                                              total_tokens=completion.prompt_tokens + completion.completion_tokens))

    def complete(self, request: lm15.Request) -> lm15.Response:
        return self._response(self.client.router.completion(**self._arguments(request)))


class AsyncRouterEngine:
    """The async half of :class:`RouterEngine` (``router.acompletion``)."""

    def __init__(self, engine: RouterEngine):
        self.engine = engine

    async def complete(self, request: lm15.Request) -> lm15.Response:
        return self.engine._response(await self.engine.client.router.acompletion(**self.engine._arguments(request)))


def router_lm(router: Any, model: str | None = None, **completion_kwargs: Any) -> dspy.LM:
    """A ``dspy.LM`` whose calls go through ``router`` (a ``litellm.Router``): for
    ``dspy.configure(lm=...)``, ``rlm_dspy.RLM(sub_lm=...)`` or any DSPy module.

    Args:
        router: the Router.
        model: its model group to call; may be left out when it has only one.
        **completion_kwargs: sent with every call (``temperature=...``).

    Returns:
        The LM, named after the router's priciest deployment so budgets price its calls as an
        upper bound (a fallback may be the one that answers).

    Raises:
        TypeError: ``router`` is not a ``litellm.Router``.
        ValueError: ``model`` is not one of its groups, or is needed and missing.
    """
    client = RouterClient(router, model, **completion_kwargs)
    deployments = client.deployment_models() or [client.model]
    priciest = max(deployments, key=lambda name: price_usd(name, 1_000_000, 1_000_000))
    engine = RouterEngine(client)
    return dspy.LM(priciest, engine=engine, async_engine=AsyncRouterEngine(engine), cache=False)


class MeteredCall:
    """One root predictor call held against the budget: reserved on creation, settled by ``finish``.

    The reservation counts the prompt the adapter formats for the call. Run the call under
    ``dspy.context(adapter=call.adapter)``: that adapter gives the call those same messages
    instead of formatting them a second time (``adapter`` is ``None`` where there is no prompt).
    """

    def __init__(self, budget: Budget, predictor: dspy.Predict, inputs: dict[str, Any],
                 held: Reservation | None = None):
        self.adapter: Any = None
        if isinstance(predictor, dspy.Predict):
            lm = resolve_lm(predictor.lm, "RLM's root predictors")
            self.adapter, messages = formatted_once(predictor, inputs)
            prompt_bound, output_bound = estimate_prompt_tokens(messages), max_output_tokens(predictor, lm)
            model = str(lm.model)
            bound = reply_bound(predictor, lm)
        else:
            # A predictor replaced by another callable (a custom module, a test double) has no
            # prompt to bound before dispatch: it is charged one call, and then what DSPy tracked.
            prompt_bound = output_bound = 0
            model = ""
            bound = {}
        self.inputs = {**inputs, "config": bound} if bound else inputs  # what the predictor is called with
        self.budget = budget
        if held is None:
            self.reservation = budget.reserve_call(tokens=prompt_bound + output_bound,
                                                   cost_usd=price_usd(model, prompt_bound, output_bound) if model
                                                   else 0.0)
        else:
            check_held(held, budget, prompt_bound + output_bound)
            self.reservation = held

    def finish(self, tracker: Any) -> tuple[int, int]:
        """Commit what DSPy tracked, priced per model (also when the call failed: it was dispatched).

        Returns:
            The call's (prompt, completion) tokens.
        """
        usage = _usage(tracker)
        tokens = sum(p for p, _ in usage.values()), sum(c for _, c in usage.values())
        self.budget.commit(self.reservation, prompt_tokens=tokens[0], completion_tokens=tokens[1],
                           cost_usd=sum(price_usd(model, p, c) for model, (p, c) in usage.items()))
        return tokens


def prompt_tokens_bound(predictor: dspy.Predict, inputs: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens of ``predictor(**inputs)``, from the exact messages the
    configured adapter will send."""
    adapter = dspy.settings.adapter or dspy.ChatAdapter()
    return estimate_prompt_tokens(adapter.format(predictor.signature, predictor.demos, inputs))


def formatted_once(predictor: dspy.Predict, inputs: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The messages the configured adapter formats for ``predictor(**inputs)``, and a copy of that
    adapter which hands the call these messages rather than formatting them again.

    The copy answers ``format`` from the messages only for the same signature, demos and input
    objects (what :class:`dspy.Predict` passes on when nothing rewrites them); any other ``format``
    (a signature rewritten for tools, another predictor) is the adapter's own. So the prompt
    counted against the budget is the prompt sent.

    Args:
        predictor: the root predictor about to be called.
        inputs: its input fields.

    Returns:
        ``(adapter, messages)``: run the call under ``dspy.context(adapter=adapter)``.
    """
    adapter = copy.copy(dspy.settings.adapter or dspy.ChatAdapter())
    messages = adapter.format(predictor.signature, predictor.demos, inputs)
    adapter.format = _reusing(adapter.format, predictor.signature, predictor.demos, inputs, messages)
    return adapter, messages


def _reusing(format_: Callable[..., list[dict[str, Any]]], signature: Any, demos: list[Any], inputs: dict[str, Any],
             messages: list[dict[str, Any]]) -> Callable[..., list[dict[str, Any]]]:
    """``format_``, answering a call with ``signature``, ``demos`` and ``inputs`` (the same objects)
    with a copy of ``messages``, which ``format_`` made for them."""

    def format(called_signature: Any, called_demos: list[Any], called_inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if (called_signature is signature and called_demos is demos and called_inputs.keys() == inputs.keys()
                and all(called_inputs[name] is value for name, value in inputs.items())):
            return copy.deepcopy(messages)
        return format_(called_signature, called_demos, called_inputs)

    return format


def _out_of_time(budget: Budget) -> BudgetExceeded:
    return BudgetExceeded("max_seconds", f"budget exhausted (max_seconds): {budget.max_seconds} s of wall-clock "
                                         "time used while a root LM call was pending", budget.spent())


def metered_predict(budget: Budget, predictor: dspy.Predict, held: Reservation | None = None,
                    tokens: list[int] | None = None, **inputs: Any) -> dspy.Prediction:
    """``predictor(**inputs)`` under ``budget`` (drawing on ``held`` when given); raises
    :class:`BudgetExceeded` before dispatch, or when the wall clock runs out while waiting.
    ``tokens``, when given, receives the call's [prompt, completion] tokens (for the record).

    With a time cap the call runs in a worker thread so the wait can end at the deadline; a
    call abandoned there finishes in the background and its usage is not counted.
    """
    call = MeteredCall(budget, predictor, inputs, held)
    with dspy.track_usage() as tracker, dspy.context(adapter=call.adapter or dspy.settings.adapter):
        try:
            return call_with_timeout(functools.partial(predictor, **call.inputs), timeout=budget.seconds_left())
        except CallTimedOut:
            raise _out_of_time(budget) from None
        finally:
            _report(call.finish(tracker), tokens)


async def ametered_predict(budget: Budget, predictor: dspy.Predict, held: Reservation | None = None,
                           tokens: list[int] | None = None, **inputs: Any) -> dspy.Prediction:
    call = MeteredCall(budget, predictor, inputs, held)
    with dspy.track_usage() as tracker, dspy.context(adapter=call.adapter or dspy.settings.adapter):
        try:
            return await asyncio.wait_for(predictor.acall(**call.inputs), timeout=budget.seconds_left())
        except TimeoutError:
            raise _out_of_time(budget) from None
        finally:
            _report(call.finish(tracker), tokens)


def _report(used: tuple[int, int], tokens: list[int] | None) -> None:
    if tokens is not None:
        tokens[:] = used
