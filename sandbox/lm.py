"""LM clients behind one small async protocol, and the metered call every caller goes through.

``LiteLLMClient`` is the default (any litellm provider string; local
OpenAI-compatible servers via ``api_base``). Adapters wrap their framework's own
LM (a ``dspy.LM``, a LangChain chat model) in the same protocol instead.
:func:`metered_completion` reserves budget before dispatch, cancels the request
when the wall-clock budget runs out, and commits the real usage and cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import random
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sandbox.budget import Budget, BudgetExceeded, Reservation

Messages = list[dict[str, str]]
LOCAL_MODEL = "local"  # the model string that means the embedded model (see sandbox.local.local_endpoint)
PLACEHOLDER_API_KEY = "sk-local-no-key"  # OpenAI-compatible local servers ignore the key; clients insist on one
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators a chat template adds per message
CHARS_PER_TOKEN = 4  # what a token of English text averages; turns a window in tokens into characters
ROOT_MAX_TOKENS = 2048  # the longest root reply, where neither the caller nor the LM sets a bound


@dataclass(frozen=True)
class Completion:
    """One LM answer and what it cost. ``cost_usd`` is ``None`` when nobody knows it."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    model: str = ""


@runtime_checkable
class LMClient(Protocol):
    """What the runtime needs from a language model."""

    model: str

    async def acomplete(self, messages: Messages, *, max_tokens: int) -> Completion:
        """Answer a chat; never produce more than ``max_tokens`` tokens."""
        ...


def import_litellm() -> Any:
    """``litellm``, imported on first use and told not to print its "Give Feedback / Get Help"
    banner to stdout on every failed call (the errors themselves still say what went wrong)."""
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def estimate_prompt_tokens(messages: Messages) -> int:
    """An upper bound on prompt tokens: byte-level tokenizers spend at least one byte per token."""
    return sum(len(str(m.get("content", "")).encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def estimate_cost(lm: Any, prompt_tokens: int, completion_tokens: int) -> float:
    estimator = getattr(lm, "estimate_cost", None)
    return float(estimator(prompt_tokens, completion_tokens)) if callable(estimator) else 0.0


def is_context_window_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the prompt was longer than the model's window (litellm, DSPy and
    OpenAI-compatible servers all name it ContextWindowExceeded...)."""
    return "ContextWindowExceeded" in type(exc).__name__ or "maximum context length" in str(exc)


def drop_oldest_exchange(messages: Messages, keep_first: int = 2) -> Messages | None:
    """``messages`` without its oldest assistant/user exchange after the first ``keep_first``
    (the system prompt and the query); ``None`` when there is nothing left to drop."""
    if len(messages) <= keep_first + 1:
        return None
    return [*messages[:keep_first], *messages[keep_first + 2:]]


def input_window_tokens(lm: Any) -> int | None:
    """The input window of ``lm`` in tokens, when its client can tell (see :func:`litellm_input_tokens`).

    Args:
        lm: an :class:`LMClient`; one with an ``input_window()`` method knows its window.

    Returns:
        The window in tokens, or ``None`` when nobody knows it.
    """
    window = getattr(lm, "input_window", None)
    tokens = window() if callable(window) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else None


@functools.lru_cache(maxsize=256)
def litellm_input_tokens(model: str) -> int | None:
    """``max_input_tokens`` of the litellm model string ``model`` from litellm's bundled model map.

    Never fetches anything: importing ``sandbox`` sets ``LITELLM_LOCAL_MODEL_COST_MAP=True``, so
    litellm reads only the map shipped with it. litellm is imported here, on first use.

    Args:
        model: a litellm model string, e.g. ``"openai/gpt-4o-mini"``.

    Returns:
        The window in tokens, or ``None`` for a model the map does not list (local models).
    """
    litellm = import_litellm()

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # litellm prints a provider list for unknown models
            tokens = litellm.get_model_info(model).get("max_input_tokens")
    except Exception:  # noqa: BLE001 - litellm raises several types for unmapped models
        return None
    return tokens if isinstance(tokens, int) and tokens > 0 else None


def check_messages(messages: Any) -> Messages:
    if not isinstance(messages, list) or not messages:
        raise TypeError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TypeError(f"messages[{i}] must be a dict with str 'role' and 'content', got {m!r:.200}")
    return messages


async def metered_completion(lm: LMClient, messages: Messages, *, budget: Budget, max_tokens: int,
                             held: Reservation | None = None) -> Completion:
    """Call ``lm`` under ``budget``: reserve (or draw on ``held``), dispatch with the wall-clock
    deadline, commit.

    Args:
        lm: the model.
        messages: the chat.
        budget: the ledger the call counts against.
        max_tokens: the most tokens the reply may have.
        held: a call reserved earlier for this one (see :func:`~sandbox.budget.hold_last_call`);
            this function settles it in every case (commits it, or cancels it).

    Returns:
        The model's answer and what it cost.

    Raises:
        BudgetExceeded: before dispatch when a cap would be crossed (or the call does not fit
            in ``held``), and when the wall-clock cap runs out while the call is pending (the
            call is cancelled).
    """
    check_messages(messages)
    prompt_bound = estimate_prompt_tokens(messages)
    if held is None:
        reservation = budget.reserve_call(tokens=prompt_bound + max_tokens,
                                          cost_usd=estimate_cost(lm, prompt_bound, max_tokens))
    else:
        reservation = held
        try:
            if held.tokens and prompt_bound + max_tokens > held.tokens:
                raise BudgetExceeded("max_tokens", f"budget exhausted (max_tokens): this call may need "
                                                   f"{prompt_bound + max_tokens} tokens, {held.tokens} are held "
                                                   "for it", budget.spent())
            budget.check_time()
        except BudgetExceeded:
            budget.cancel(held, dispatched=False)
            raise
    try:
        completion = await asyncio.wait_for(lm.acomplete(messages, max_tokens=max_tokens),
                                            timeout=budget.seconds_left())
    except TimeoutError:
        budget.cancel(reservation, dispatched=True)
        raise BudgetExceeded("max_seconds", f"budget exhausted (max_seconds): {budget.max_seconds} s of "
                                            "wall-clock time used while an LM call was pending",
                             budget.spent()) from None
    except BaseException:
        budget.cancel(reservation, dispatched=True)
        raise
    cost = completion.cost_usd
    if cost is None:
        cost = estimate_cost(lm, completion.prompt_tokens, completion.completion_tokens)
    budget.commit(reservation, prompt_tokens=completion.prompt_tokens,
                  completion_tokens=completion.completion_tokens, cost_usd=cost)
    return completion


class LiteLLMClient:
    """An :class:`LMClient` over ``litellm.acompletion`` with retries on transient errors.

    ``model`` is any litellm model string (``"openai/gpt-4o-mini"``,
    ``"openai/local"`` with ``api_base="http://127.0.0.1:8080/v1"``). With ``api_base`` and
    no ``api_key`` (none given, none in the provider's environment variable) it sends a
    placeholder key, which local OpenAI-compatible servers ignore. Rate limits,
    timeouts, connection errors and 5xx are retried ``max_retries`` times with
    jittered exponential backoff; other errors are raised at once.
    """

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 max_retries: int = 3, backoff_s: float = 0.5, timeout_s: float = 120.0,
                 **completion_kwargs: Any):
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty litellm model string, got {model!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        _check_routable(model)
        self.model = model
        self.api_base = api_base
        self._api_key = default_api_key(model, api_base, api_key)  # kept off repr() and out of every error that crosses a boundary
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.completion_kwargs = completion_kwargs

    def __repr__(self) -> str:
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"LiteLLMClient({self.model!r}{base})"

    async def acomplete(self, messages: Messages, *, max_tokens: int) -> Completion:
        litellm = import_litellm()

        transient = (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError,
                     litellm.ServiceUnavailableError, litellm.InternalServerError)
        for attempt in range(self.max_retries + 1):
            try:
                response = await litellm.acompletion(
                    model=self.model, messages=messages, max_tokens=max_tokens, api_base=self.api_base,
                    api_key=self._api_key, timeout=self.timeout_s, num_retries=0, **self.completion_kwargs)
                break
            except transient:
                if attempt == self.max_retries:
                    raise
                await asyncio.sleep(self.backoff_s * (2 ** attempt) * (1 + random.random()))
        return completion_from_response(response, self.model)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return price_usd(self.model, prompt_tokens, completion_tokens)

    def input_window(self) -> int | None:
        """The model's input window in tokens from litellm's local map; ``None`` when not listed."""
        return litellm_input_tokens(self.model)


def completion_from_response(response: Any, model: str) -> Completion:
    """A :class:`Completion` from a litellm (OpenAI-shaped) chat response, with litellm's cost when it knows it."""
    usage = getattr(response, "usage", None)
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    return Completion(text=response.choices[0].message.content or "",
                      prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                      completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                      cost_usd=float(cost) if cost is not None else None, model=model)


def price_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Dollars from litellm's local price map; 0.0 for models it does not price (local ones)."""
    prompt_price, completion_price = _prices_per_million(model)
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1e6


@functools.lru_cache(maxsize=256)
def _prices_per_million(model: str) -> tuple[float, float]:
    litellm = import_litellm()

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # litellm prints a provider list for unknown models
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=model, prompt_tokens=1_000_000, completion_tokens=1_000_000)
    except Exception:  # noqa: BLE001 - litellm raises several types for unpriced models
        return 0.0, 0.0
    return float(prompt_cost), float(completion_cost)


def _check_routable(model: str) -> None:
    litellm = import_litellm()

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # litellm prints a provider list on failure
            litellm.get_llm_provider(model)
    except Exception:  # noqa: BLE001 - litellm raises BadRequestError and others here
        raise ValueError(f"litellm does not know how to route model {model!r}: use a provider prefix, e.g. "
                         "'openai/gpt-4o-mini', or 'openai/<name>' with api_base=... for a local "
                         "OpenAI-compatible server") from None


def default_api_key(model: str, api_base: str | None, api_key: str | None) -> str | None:
    """The key to send: ``api_key``; else, for an ``api_base`` server when the provider's
    environment variable (``OPENAI_API_KEY``...) is not set either, a placeholder (local
    OpenAI-compatible servers ignore the key, but OpenAI clients refuse to call without one).

    Args:
        model: the litellm model string.
        api_base: the server's base URL, or ``None`` for the provider's own.
        api_key: the key the caller gave, if any.

    Returns:
        The key, or ``None`` to let litellm read the provider's environment variable.
    """
    if api_key is not None or api_base is None:
        return api_key
    try:
        in_environment = bool(import_litellm().validate_environment(model).get("keys_in_environment"))
    except Exception:  # noqa: BLE001 - litellm raises several types for models it cannot place
        in_environment = False
    return None if in_environment else PLACEHOLDER_API_KEY


def as_lm_client(model: Any, **kwargs: Any) -> LMClient:
    """An :class:`LMClient` for a model named by a string, or the object itself if it already is one.

    Args:
        model: a litellm model string; ``"local"`` for the embedded model (the one ``rlm serve``
            keeps warm, else one started for this process, see :func:`sandbox.local.local_endpoint`);
            an :class:`LMClient`; or a ``litellm.Router``.
        **kwargs: :class:`LiteLLMClient` options for a string (``api_base``, ``api_key``, ...).

    Returns:
        The client.

    Raises:
        TypeError: ``model`` is none of these.
        ValueError: litellm cannot route the string, or ``"local"`` came with an ``api_base``/``api_key``.
        sandbox.local.LocalModelError: ``"local"``, and the embedded model cannot be started.
    """
    if model == LOCAL_MODEL:
        from sandbox.local import local_endpoint

        if kwargs.get("api_base") is not None or kwargs.get("api_key") is not None:
            raise ValueError("model='local' is the embedded model, which needs no api_base or api_key; for "
                             "another OpenAI-compatible server pass model='openai/<name>' with api_base=...")
        endpoint = local_endpoint()
        options = {k: v for k, v in kwargs.items() if k not in ("api_base", "api_key")}
        return LiteLLMClient(endpoint.model, api_base=endpoint.api_base, api_key=endpoint.api_key, **options)
    if isinstance(model, str):
        return LiteLLMClient(model, **kwargs)
    if isinstance(model, LMClient):
        return model
    from sandbox.router import router_client  # a litellm.Router (spread over endpoints, with fallbacks)

    routed = router_client(model)
    if routed is not None:
        return routed
    raise TypeError(f"expected a litellm model string or an LMClient (with .model and async .acomplete), "
                    f"got {type(model).__name__}")
