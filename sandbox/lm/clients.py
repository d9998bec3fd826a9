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
import errno
import functools
import importlib.util
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sandbox.engine.budget import Budget, BudgetExceeded, Reservation

Messages = list[dict[str, str]]
LOCAL_MODEL = "local"  # the model string that means the embedded model (see sandbox.lm.local.local_endpoint)
PLACEHOLDER_API_KEY = "sk-local-no-key"  # OpenAI-compatible local servers ignore the key; clients insist on one
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators a chat template adds per message
CHARS_PER_TOKEN = 4  # what a token of English text averages; turns a window in tokens into characters
ROOT_MAX_TOKENS = 2048  # the longest root reply, where neither the caller nor the LM sets a bound
OPENAI_PREFIX = "openai/"  # litellm routes "openai/<name>" to its OpenAI provider, always
OPENAI_KEY_ENV = "OPENAI_API_KEY"
MODEL_MAP_FILE = "model_prices_and_context_window_backup.json"  # the map litellm reads (LITELLM_LOCAL_MODEL_COST_MAP)


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
    if is_unlisted(model):
        return None
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


def check_held(held: Reservation, budget: Budget, tokens: int) -> None:
    """Refuse a call that needs more than ``held`` holds for it, or comes after the time cap.

    Args:
        held: what was reserved earlier for this call (see :func:`~sandbox.engine.budget.hold_last_call`).
        budget: the ledger it was reserved on.
        tokens: the call's upper bound on tokens, prompt and reply.

    Raises:
        BudgetExceeded: ``tokens`` is over what ``held`` holds, or the wall clock ran out.
    """
    if held.tokens and tokens > held.tokens:
        raise BudgetExceeded("max_tokens", f"budget exhausted (max_tokens): this call may need {tokens} tokens, "
                                           f"{held.tokens} are held for it", budget.spent())
    budget.check_time()


def reservation_cost(lm: Any, budget: Budget, prompt_tokens: int, completion_tokens: int) -> float:
    """The cost to hold for a call before dispatch: its bound when a cost cap (or a shared ledger,
    whose other users may cap cost) can use it, else 0.0, so that no price is looked up on the way
    to the socket where nothing reads it."""
    if budget.max_cost_usd is None and budget.ledger is None:
        return 0.0
    return estimate_cost(lm, prompt_tokens, completion_tokens)


async def metered_completion(lm: LMClient, messages: Messages, *, budget: Budget, max_tokens: int,
                             held: Reservation | None = None) -> Completion:
    """Call ``lm`` under ``budget``: reserve (or draw on ``held``), dispatch with the wall-clock
    deadline, commit.

    Args:
        lm: the model.
        messages: the chat.
        budget: the ledger the call counts against.
        max_tokens: the most tokens the reply may have.
        held: a call reserved earlier for this one (see :func:`~sandbox.engine.budget.hold_last_call`);
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
                                          cost_usd=reservation_cost(lm, budget, prompt_bound, max_tokens))
    else:
        reservation = held
        try:
            check_held(held, budget, prompt_bound + max_tokens)
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
    jittered exponential backoff (a refused connection is not: nothing listens there);
    other errors are raised at once.
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
        attempt = 0
        while True:
            try:
                response = await import_litellm().acompletion(
                    model=self.model, messages=messages, max_tokens=max_tokens, api_base=self.api_base,
                    api_key=self._api_key, timeout=self.timeout_s, num_retries=0, **self.completion_kwargs)
                return completion_from_response(response, self.model)
            except Exception as exc:
                if attempt == self.max_retries or not is_transient(exc) or is_refused(exc):
                    raise
            await asyncio.sleep(self.backoff_s * (2 ** attempt) * (1 + random.random()))
            attempt += 1

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return price_usd(self.model, prompt_tokens, completion_tokens)

    def input_window(self) -> int | None:
        """The model's input window in tokens from litellm's local map; ``None`` when not listed."""
        return litellm_input_tokens(self.model)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a litellm error worth retrying: a rate limit, a timeout, a lost connection, a 5xx."""
    litellm = import_litellm()
    return isinstance(exc, (litellm.RateLimitError, litellm.Timeout, litellm.APIConnectionError,
                            litellm.ServiceUnavailableError, litellm.InternalServerError))


def is_refused(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it came from) is a refused connection: nothing listens at the address."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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
    if is_unlisted(model):
        return 0.0, 0.0
    litellm = import_litellm()

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # litellm prints a provider list for unknown models
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=model, prompt_tokens=1_000_000, completion_tokens=1_000_000)
    except Exception:  # noqa: BLE001 - litellm raises several types for unpriced models
        return 0.0, 0.0
    return float(prompt_cost), float(completion_cost)


@functools.lru_cache(maxsize=1)
def bundled_model_map() -> dict[str, Any]:
    """litellm's bundled model map (prices, windows), read from its JSON file without importing
    litellm (some seconds); empty when the file cannot be read."""
    spec = importlib.util.find_spec("litellm")  # finds the package without running it
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((Path(location) / MODEL_MAP_FILE).read_text(encoding="utf-8"))
    return {}


def is_unlisted(model: str) -> bool:
    """Whether ``model`` is an ``openai/<name>`` that litellm's bundled map lists under neither
    name: litellm knows no price or window for it (it raises ModelNotMappedError), so nobody need
    import litellm to learn that. Other models are for litellm to look up."""
    if not model.startswith(OPENAI_PREFIX):
        return False
    known = bundled_model_map()
    return bool(known) and model not in known and model[len(OPENAI_PREFIX):] not in known


def _check_routable(model: str) -> None:
    if model.startswith(OPENAI_PREFIX) and model[len(OPENAI_PREFIX):].strip():
        return  # litellm routes every "openai/<name>" to its OpenAI provider: no need to import it to know
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
    if model.startswith(OPENAI_PREFIX):  # what litellm's validate_environment checks for this provider
        return None if OPENAI_KEY_ENV in os.environ else PLACEHOLDER_API_KEY
    try:
        in_environment = bool(import_litellm().validate_environment(model).get("keys_in_environment"))
    except Exception:  # noqa: BLE001 - litellm raises several types for models it cannot place
        in_environment = False
    return None if in_environment else PLACEHOLDER_API_KEY


def as_lm_client(model: Any, **kwargs: Any) -> LMClient:
    """An :class:`LMClient` for a model named by a string, or the object itself if it already is one.

    Args:
        model: a litellm model string; ``"local"`` for the embedded model (the one ``rlm serve``
            keeps warm, else one started for this process, see :func:`sandbox.lm.local.local_endpoint`);
            an :class:`LMClient`; or a ``litellm.Router``.
        **kwargs: :class:`LiteLLMClient` options for a string (``api_base``, ``api_key``, ...).

    Returns:
        The client.

    Raises:
        TypeError: ``model`` is none of these.
        ValueError: litellm cannot route the string, or ``"local"`` came with an ``api_base``/``api_key``.
        sandbox.lm.local.LocalModelError: ``"local"``, and the embedded model cannot be started.
    """
    if model == LOCAL_MODEL:
        from sandbox.lm.local import local_endpoint

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
    from sandbox.lm.router import router_client  # a litellm.Router (spread over endpoints, with fallbacks)

    routed = router_client(model)
    if routed is not None:
        return routed
    raise TypeError(f"expected a litellm model string or an LMClient (with .model and async .acomplete), "
                    f"got {type(model).__name__}")
