"""``create_rlm_graph``: an RLM as a compiled LangGraph graph, one REPL iteration per super-step.

Nodes: ``prepare`` → ``root_lm`` → (``review_code``) → ``execute`` → back to
``root_lm``, until a candidate answer goes through (``review_final``) and
(``evaluate``) to ``finalize``. A run that stops at a cap without an answer goes
through ``extract`` first: one LM call, held from the start, answers from the query
and what the cells printed. Every super-step is a checkpoint. The live REPL
is never checkpointed: it sits in an ``UntrackedValue`` channel and, after a
resume (an interrupt, or a new process), is rebuilt by replaying ``code_log``
with host-function answers served from ``call_log``. The context itself is kept
in the graph's LangGraph store (:mod:`rlm_graph.contexts`); state holds its reference.

What grows with the run (``messages``, ``code_log``, ``call_log``, ``events``) lives
in LangGraph ``DeltaChannel``s: a checkpoint stores only what its super-step added, so
checkpoint bytes per super-step do not grow with the iterations before it. Nodes
return whole values; :func:`_as_deltas` turns them into the appended part (or an
``Overwrite`` where a value was replaced, e.g. an exchange dropped from the chat).

Follow-up questions (:mod:`sandbox.engine.turns`): with a checkpointer, an input with no ``context``
on a thread whose last question finished is the thread's next turn. It keeps the context, the
REPL's variables and the logs of code and host calls; its chat starts afresh with a summary of
the earlier turns. The finished turn's live REPL waits in the graph (:class:`_LiveRuntimes`, the
``keep_sessions`` most recent threads) for the next; elsewhere, or once dropped, the follow-up
rebuilds it by the replay above. An input with ``context`` starts the thread over.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Required, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command, Overwrite, interrupt
from opentelemetry.trace import TracerProvider

from rlm_graph.chat_model import as_client
from rlm_graph.contexts import HandedContexts, KeptContexts, get_context, put_context
from sandbox.boundary.repl import CellResult, SandboxError
from sandbox.engine.bridge import ChildRunner
from sandbox.engine.budget import Budget, BudgetExceeded, run_limits
from sandbox.engine.compaction import COMPACTED_STEPS, Step
from sandbox.engine.context import Context, check_context, describe_context
from sandbox.engine.evaluator import Evaluation, Evaluator, as_evaluator
from sandbox.engine.grounding import SEEN_WHOLE_CHARS, GroundingCheck, premature_answer, reads_inputs
from sandbox.engine.parsing import Action, parse_reply, without_code_blocks
from sandbox.engine.prompts import (
    EXAMPLE_VALUES,
    EXTRACT_SYSTEM_PROMPT,
    extract_request,
    output_message,
    query_message,
    repeated_failure_note,
    root_system_prompt,
)
from sandbox.engine.refinement import RefinementState, feedback_message
from sandbox.engine.run import Run, RunLink, cap_of
from sandbox.engine.replay import CallLog
from sandbox.engine.session import SandboxOptions, Session, check_user_tools, format_cell
from sandbox.engine.subcall_cache import CachedLM, SubCallCache
from sandbox.engine.trajectory import Trajectory
from sandbox.engine.turns import BudgetScope, Turn, check_scope, made_variables, starting_usage, summary, usage_since
from sandbox.lm.clients import (
    LMClient,
    estimate_prompt_tokens,
    is_context_window_error,
    metered_completion,
)

STATE_VERSION = 3  # 2: the growing logs are DeltaChannels, the context is in the store; 3: `trajectory` is `events`
Review = Literal["code", "final"]
LOG_KEYS = ("messages", "code_log", "call_log")
# Super-steps a run takes: per iteration at most root_lm, a compaction's second root_lm, review_code,
# execute, review_final and evaluate; per run prepare, extract and finalize, with room to spare.
STEPS_PER_ITERATION, STEPS_PER_RUN = 6, 10


def _append(state: list[Any], writes: Sequence[dict[str, list[Any]]]) -> list[Any]:
    """The reducer of the log channels: each write is ``{"append": items}``, what a super-step
    appended. (Not a bare list: LangGraph turns chat-message dicts written to a DeltaChannel
    as a list into LangChain messages.)"""
    return [*state, *(item for write in writes for item in write["append"])]


def _extend_events(state: dict[str, Any], writes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reducer of ``events`` (the event tree): each write carries the run's query and depth, and the
    events and child trajectories a super-step added."""
    merged = {"query": state.get("query", ""), "depth": state.get("depth", 0),
              "events": list(state.get("events", [])), "children": list(state.get("children", []))}
    for write in writes:
        merged["query"], merged["depth"] = write["query"], write["depth"]
        merged["events"] += write["events"]
        merged["children"] += write["children"]
    return merged


# One channel object per key, shared by the state and output schemas.
_EVENTS = DeltaChannel(_extend_events, dict)


def _log_channel() -> DeltaChannel:
    return DeltaChannel(_append, list)


class RLMInput(TypedDict, total=False):
    query: Required[str]
    context: Context
    context_ref: str
    depth: int
    follow_up: bool  # set by RLMGraph: the input has no context, so it continues the thread
    parent: Annotated[RunLink | None, UntrackedValue(object)]


class RLMOutput(TypedDict, total=False):
    answer: Any
    usage: dict[str, Any]
    iterations: int
    stop_reason: str
    events: Annotated[dict[str, Any], _EVENTS]
    turns: list[dict[str, Any]]


class RLMState(TypedDict, total=False):
    query: str
    context_ref: str
    depth: int
    version: int
    messages: Annotated[list[dict[str, str]], _log_channel()]
    code_log: Annotated[list[str], _log_channel()]
    call_log: Annotated[list[dict[str, Any]], _log_channel()]
    iteration: int
    pending_code: list[str] | None
    failed_cell: dict[str, Any] | None
    context_chars: int
    looked: bool  # whether an answer may come now: the checks are off, or code has read the context
    candidate: dict[str, Any] | None
    refinement: dict[str, Any]
    usage: dict[str, Any]
    events: Annotated[dict[str, Any], _EVENTS]
    answer: Any
    stop_reason: str | None
    iterations: int
    follow_up: bool
    turns: list[dict[str, Any]]  # the thread's finished turns (sandbox.engine.turns.Turn), this one last once done
    turn_open: bool  # a turn started and has not reached finalize (paused, or failed)
    turn_start: dict[str, Any]  # the ledger when this turn started
    variables_before: list[str]  # the REPL's names when this turn started
    parent: Annotated[RunLink | None, UntrackedValue(object)]
    runtime: Annotated[Any, UntrackedValue(object)]


class _Runtime(Run):
    """A graph run's live part: the engine's :class:`~sandbox.engine.run.Run`, and the stream
    writer its events go to (none for a child, or while the runtime is kept between turns)."""

    writer: Callable[[Any], None] | None = None

    def emit(self, event: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer(dict(event))  # a copy: a refusal group's count goes on in the trajectory


class _LiveRuntimes:
    """The live REPLs of finished turns, by thread, waiting for a follow-up: the ``limit`` most
    recently used; an older one is closed (its thread's next turn rebuilds it by replay).

    A runtime is handed out only to the turn that comes right after the one that kept it (the
    same number of turns and cells on the thread); one kept for a thread that moved on elsewhere
    (another process, a rewound checkpoint) is closed instead.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._kept: OrderedDict[tuple[str, str], tuple[_Runtime, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, key: tuple[str, str], runtime: _Runtime, *, turns: int, cells: int) -> None:
        with self._lock:
            replaced = self._kept.pop(key, None)
            self._kept[key] = (runtime, turns, cells)
            stale = [self._kept.popitem(last=False)[1] for _ in range(len(self._kept) - self.limit)]
        for old, _, _ in ([replaced] if replaced is not None else []) + stale:
            old.close()

    def take(self, key: tuple[str, str], *, turns: int, cells: int) -> _Runtime | None:
        """The runtime kept for ``key`` if it is the one this thread's state continues, else ``None``."""
        with self._lock:
            kept = self._kept.pop(key, None)
        if kept is None:
            return None
        runtime, kept_turns, kept_cells = kept
        if (kept_turns, kept_cells) == (turns, cells) and not runtime.closed:
            return runtime
        runtime.close()
        return None

    def close(self, key: tuple[str, str] | None = None) -> int:
        """Close the runtime kept for ``key`` (every one, when ``None``); how many were closed."""
        with self._lock:
            if key is None:
                closing = [kept[0] for kept in self._kept.values()]
                self._kept.clear()
            else:
                kept = self._kept.pop(key, None)
                closing = [] if kept is None else [kept[0]]
        for runtime in closing:
            runtime.close()
        return len(closing)

    def __len__(self) -> int:
        return len(self._kept)


# Set by create_rlm_node: the parent node's stream writer. A subgraph's own custom events reach a
# parent's stream only with subgraphs=True; written here, they reach it like the node's own.
PARENT_STREAM_WRITER = "rlm_parent_stream_writer"


def _thread_key(config: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """The (thread_id, graph namespace) of the user's ``config``, or of the running node's when
    ``None``; ``None`` outside a thread. (A node's ``checkpoint_ns`` ends with its own task,
    ``name:task-id``: the graph's namespace is the path before it, by node names.)"""
    inside = config is None
    if inside:
        try:
            config = get_config()
        except RuntimeError:
            return None
    configurable = config.get("configurable") or {}
    thread_id = configurable.get("thread_id")
    path = [part.split(":")[0] for part in str(configurable.get("checkpoint_ns") or "").split("|") if part]
    return None if thread_id is None else (str(thread_id), "|".join(path[:-1] if inside else path))


def _stream_writer() -> Callable[[Any], None] | None:
    """Where this run's stream events go: the parent node's stream, else this graph's, else nowhere."""
    try:
        return get_config().get("configurable", {}).get(PARENT_STREAM_WRITER) or get_stream_writer()
    except RuntimeError:
        return None


class RLMGraph(CompiledStateGraph):
    """The compiled RLM graph. Its input's ``context`` goes to the graph's ``store`` before the
    graph sees it, so no checkpoint ever holds the context itself.

    With a checkpointer, runs default to ``durability="sync"``: each super-step's checkpoint is
    written before the next starts, so a worker killed at any point resumes elsewhere from the
    last completed super-step. (``"async"``, LangGraph's default, may lose every checkpoint
    after the first to a SIGKILL.) Pass ``durability=`` to choose otherwise.

    Follow-ups: with a checkpointer, ``{"query": ...}`` without ``context`` on a thread whose
    last question finished asks the thread's next question over the same context and REPL
    (see :mod:`sandbox.engine.turns`); ``context`` (or ``context_ref``) in the input starts the thread
    over with a new REPL. The live REPL of each finished turn is kept for the next, for the
    ``keep_sessions`` most recent threads; :meth:`close_session` frees one thread's,
    :meth:`close` all of them (as happens when the graph is garbage-collected, and at interpreter
    exit). A freed thread can still go on: its next turn rebuilds the REPL by replay.
    """

    def __init__(self, *, kept_contexts: KeptContexts | None = None, live: _LiveRuntimes | None = None,
                 handed: HandedContexts | None = None, step_limit: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.step_limit = step_limit  # more super-steps than a run can take before its own caps stop it
        self.kept_contexts = kept_contexts  # set when the store is the graph's own InMemoryStore
        self.handed = handed if handed is not None else HandedContexts()  # shared with the engine's nodes
        self.live = live  # the kept REPLs of finished turns; None without a checkpointer

    def _stash_context(self, input: Any) -> tuple[Any, str | None]:
        """The input with its ``context`` put into the store (its reference instead), and that
        reference when the context was handed to this run's nodes (release it when the run ends)."""
        if not isinstance(input, Mapping):
            return input, None  # None (continue from a checkpoint) or a Command
        input = dict(input)
        query = input.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"RLM input needs 'query': a non-empty str, got {query!r:.80}")
        if "context" in input:
            context = check_context(input.pop("context"))
            ref = (self.kept_contexts.put(context) if self.kept_contexts is not None
                   else put_context(self.store, context))
            input["context_ref"] = ref
            input["follow_up"] = False
            self.handed.hand(ref, context)
            return input, ref
        elif not isinstance(input.get("context_ref"), str) and self.checkpointer in (None, False):
            raise ValueError("RLM input needs 'context': the text (a str or a list of str) to work on (a "
                             "follow-up without context needs a graph with a checkpointer and the thread_id "
                             "of the earlier question)")
        input["follow_up"] = not isinstance(input.get("context_ref"), str)
        return input, None

    def close_session(self, config: Mapping[str, Any]) -> bool:
        """Free the live REPL kept for the thread ``config`` names (its worker process stops).

        The thread's checkpoints stay: a later follow-up on it rebuilds the REPL by replaying
        its code, with host-function answers from its call log.

        Args:
            config: the run config, ``{"configurable": {"thread_id": ...}}``.

        Returns:
            Whether a live REPL was kept for that thread.

        Raises:
            ValueError: ``config`` names no thread.
        """
        key = _thread_key(config)
        if key is None:
            raise ValueError("close_session needs the thread's config: {'configurable': {'thread_id': ...}}")
        return self.live is not None and self.live.close(key) > 0

    def close(self) -> None:
        """Free every live REPL this graph keeps for follow-ups; the graph stays usable."""
        if self.live is not None:
            self.live.close()

    def _durable(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("durability") is None and self.checkpointer not in (None, False):
            kwargs["durability"] = "sync"
        return kwargs

    def stream(self, input: Any, config: Any = None, **kwargs: Any):  # type: ignore[override]
        input, handed = self._stash_context(input)
        return self._releasing(super().stream(input, config, **self._durable(kwargs)), handed)

    async def astream(self, input: Any, config: Any = None, **kwargs: Any):  # type: ignore[override]
        input, handed = self._stash_context(input)
        try:
            async for chunk in super().astream(input, config, **self._durable(kwargs)):
                yield chunk
        finally:
            if handed is not None:
                self.handed.release(handed)

    def _releasing(self, chunks: Any, handed: str | None) -> Any:
        """``chunks``, releasing the context handed to the run when it ends."""
        try:
            yield from chunks
        finally:
            if handed is not None:
                self.handed.release(handed)


class _Engine:
    """The node functions of one RLM graph and the settings they share."""

    def __init__(self, *, root: LMClient, sub: LMClient, budget: Budget, evaluator: Evaluator | None,
                 max_refinements: int, min_gain: float, review: Review | None, tools: dict[str, Callable[..., Any]],
                 instructions: str | None, max_iterations: int, root_max_tokens: int, options: SandboxOptions,
                 store: BaseStore, look_before_answer: bool, grounding: bool,
                 tracer_provider: TracerProvider | None = None, budget_scope: BudgetScope = "turn",
                 live: _LiveRuntimes | None = None):
        self.root, self.sub = root, sub
        self.budget_scope, self.live = budget_scope, live
        self.tracer_provider = tracer_provider
        self.look_before_answer, self.grounding = look_before_answer, grounding
        self.budget = budget
        self.evaluator = evaluator
        self.max_refinements, self.min_gain = max_refinements, min_gain
        self.review = review
        self.tools = tools
        self.instructions = instructions
        self.max_iterations = max_iterations
        self.root_max_tokens = root_max_tokens
        self.options = options
        self.store = store
        self.handed = HandedContexts()
        self.child_graph: RLMGraph | None = None

    # -- the live runtime ------------------------------------------------------------

    def _open_runtime(self, state: RLMState, *, replay: bool, context: Context | None = None) -> _Runtime:
        try:
            context = context if context is not None else get_context(self.store, state["context_ref"])
        except KeyError:
            raise LookupError(f"the context of this run ({state['context_ref']}) is not in the graph's store; "
                              "resume with a graph built with the store= the run started with (a PostgresStore "
                              "or SqliteStore shared by the workers: the default InMemoryStore lives only in "
                              "its process)") from None
        link = state.get("parent")
        if link is None:
            budget = self.budget.fresh()
            budget.restore(state.get("usage") or {})
            trajectory = Trajectory.from_dict(state["events"]) if state.get("events") else Trajectory(state["query"])
            link = RunLink.new(budget, trajectory)

        def open_session(run_child: ChildRunner) -> Session:
            return Session(variables={"context": context}, sub_lm=self.sub, budget=link.budget,
                           trajectory=link.trajectory, runner=link.runner, depth=state.get("depth", 0),
                           tools=self.tools, run_child=run_child,
                           call_log=CallLog(state.get("call_log") if replay else None), options=self.options)

        runtime = _Runtime(link, open_session, start_child=self._start_child, engine="langgraph",
                           root_model=getattr(self.root, "model", None), tracer_provider=self.tracer_provider,
                           resumed=replay)
        if state.get("parent") is None:
            runtime.writer = _stream_writer()
            runtime.trajectory.subscribe(runtime.emit)
        if replay:
            try:
                runtime.session.replay(state.get("code_log") or [])
            except BaseException:
                runtime.close()
                raise
        return runtime

    def _runtime(self, state: RLMState) -> _Runtime:
        runtime = state.get("runtime")
        if runtime is not None and not runtime.closed:
            if state.get("parent") is None:
                runtime.writer = _stream_writer()
            return runtime
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"this checkpoint was written by rlm_graph state version {state.get('version')!r}; "
                             f"this is version {STATE_VERSION}. Start a new thread for this run.")
        return self._open_runtime(state, replay=True)

    def _start_child(self, query: str, context: str, depth: int, link: RunLink) -> tuple[Any, str]:
        result = self.child_graph.invoke({"query": query, "context": context, "depth": depth, "parent": link})
        return result.get("answer"), result.get("stop_reason")

    @staticmethod
    def _progress(runtime: _Runtime, **update: Any) -> dict[str, Any]:
        return {"usage": runtime.usage(), "events": runtime.trajectory, "runtime": runtime, **update}

    def _stop(self, runtime: _Runtime, state: RLMState, reason: str, **update: Any) -> Command:
        refinement = RefinementState.from_dict(update.get("refinement") or state.get("refinement"))
        candidate = update.get("candidate", state.get("candidate")) or {}
        answer = refinement.best_answer if refinement.best_score is not None else candidate.get("answer")
        goto = "extract" if answer is None and reason != "context_window" else "finalize"
        return Command(update=self._progress(runtime, **update, answer=answer, stop_reason=reason), goto=goto)

    def _budget_stop(self, runtime: _Runtime, state: RLMState, exc: BudgetExceeded, **update: Any) -> Command:
        return self._stop(runtime, state, runtime.record_cap(exc), **update)

    def _guarded(self, node: Callable[[RLMState], Any]) -> Callable[[RLMState], Any]:
        """Close the live REPL when a node fails with an error (interrupts pass through)."""

        def run(state: RLMState) -> Any:
            try:
                return node(state)
            except Exception as exc:
                if type(exc).__module__.startswith("langgraph"):
                    raise  # GraphInterrupt and friends: control flow, not failure
                runtime = state.get("runtime")
                if runtime is not None:
                    runtime.close()
                raise

        run.__name__ = node.__name__
        return run

    def _after_candidate(self, state: RLMState) -> str:
        if self.review == "final" and state.get("depth", 0) == 0:
            return "review_final"
        return "evaluate" if self.evaluator is not None or self._grounded(state) else "finalize"

    def _grounded(self, state: RLMState) -> bool:
        """Whether answers are checked against what the run read (over a context longer than one a
        model could have read whole)."""
        return self.grounding and state.get("context_chars", 0) > SEEN_WHOLE_CHARS

    # -- nodes -----------------------------------------------------------------------

    def prepare(self, state: RLMState) -> Command:
        query, ref = state.get("query"), state.get("context_ref")
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"RLM input needs 'query': a non-empty str, got {query!r:.80}")
        if state.get("follow_up"):
            return self._follow_up(state)
        if not isinstance(ref, str):
            raise ValueError("RLM input needs 'context': the text (a str or a list of str) to work on")
        fresh = self._turn_state(state, turns=[])
        fresh.update(code_log=[], call_log=[])
        if self.live is not None and state.get("parent") is None:
            key = _thread_key()
            if key is not None:
                self.live.close(key)  # the thread starts over: its earlier REPL, if kept, is done with
        context = self.handed.get(self.store, ref)  # a fresh run's own context, else the store's copy
        runtime = self._open_runtime(fresh, replay=False, context=context)
        return self._start_turn(runtime, fresh, context, turns=[], code_log=[])

    def _turn_state(self, state: RLMState, *, turns: list[Turn]) -> RLMState:
        """The state a new turn starts from (code and call logs aside)."""
        return {"query": state["query"], "context_ref": state["context_ref"], "depth": state.get("depth", 0),
                "version": STATE_VERSION, "iteration": 0, "pending_code": None, "failed_cell": None,
                "candidate": None, "looked": True, "refinement": RefinementState().to_dict(), "answer": None,
                "stop_reason": None, "iterations": 0, "parent": state.get("parent"), "follow_up": False,
                "turns": [turn.to_dict() for turn in turns], "turn_open": True,
                "usage": starting_usage(turns, scope=self.budget_scope)}

    def _start_turn(self, runtime: _Runtime, fresh: RLMState, context: Context, *, turns: list[Turn],
                    code_log: list[str]) -> Command:
        """The turn's first chat (the summary of ``turns`` before the query) and bookkeeping; ``code_log``
        is what earlier turns ran (code that read the context there counts as looking at it)."""
        runtime.budget.start()
        chars = len(context) if isinstance(context, str) else sum(map(len, context))
        read_before = any(reads_inputs(code, ["context"]) for code in code_log)
        fresh.update(context_chars=chars, turn_start=runtime.usage(),
                     looked=read_before or not (self.look_before_answer and chars > SEEN_WHOLE_CHARS),
                     variables_before=runtime.session.repl.variables())
        system = root_system_prompt(max_output_chars=self.options.max_output_chars, tools=self.tools,
                                    can_recurse=runtime.budget.allows_depth(fresh["depth"] + 1),
                                    instructions=self.instructions)
        opening = query_message(fresh["query"], describe_context(context))
        if turns:
            opening = f"{summary(turns)}\n\n{opening}"
        fresh["messages"] = [{"role": "system", "content": system}, {"role": "user", "content": opening}]
        del fresh["usage"]  # the runtime's ledger says it now
        return Command(update=self._progress(runtime, **fresh), goto="root_lm")

    def _follow_up(self, state: RLMState) -> Command:
        """The thread's next question: its REPL (kept live, else rebuilt by replay), a fresh chat."""
        if not isinstance(state.get("context_ref"), str):
            raise ValueError("this thread has no earlier question to follow up on: its first question needs "
                             "'context' (the text to work on)")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"this thread was written by rlm_graph state version {state.get('version')!r}; "
                             f"this is version {STATE_VERSION}. Start a new thread (pass 'context' again).")
        if state.get("turn_open", True):
            raise ValueError("the last question on this thread has not finished (it is paused at a review, or "
                             "it failed): resume it with invoke(Command(resume=...), config) or "
                             "invoke(None, config) first, or pass 'context' to start the thread over")
        turns = [Turn.from_dict(turn) for turn in state.get("turns") or []]
        fresh = self._turn_state(state, turns=turns)
        code_log = list(state.get("code_log") or [])  # the thread's logs go on, unchanged
        key = _thread_key() if state.get("parent") is None else None
        runtime = None
        if self.live is not None and key is not None:
            runtime = self.live.take(key, turns=len(turns), cells=len(code_log))
        if runtime is None:
            runtime = self._open_runtime({**fresh, "code_log": code_log, "call_log": state.get("call_log") or []},
                                         replay=True)
        else:
            self._continue_runtime(runtime, fresh)
        return self._start_turn(runtime, fresh, runtime.session.context, turns=turns, code_log=code_log)

    def _continue_runtime(self, runtime: _Runtime, fresh: RLMState) -> None:
        """Point a kept runtime at a new turn: its own trajectory, ledger and held call."""
        runtime.begin_turn(Trajectory(fresh["query"]), fresh["usage"])
        runtime.writer = _stream_writer()
        runtime.trajectory.subscribe(runtime.emit)

    def _compact(self, runtime: _Runtime, state: RLMState, iteration: int) -> Command:
        """The root's chat outgrew its window: its oldest steps become a summary (:meth:`Run.compact_oldest`)."""
        head, chat = state["messages"][:2], _chat_steps(state["messages"][2:])
        steps = [Step(said=step[0]["content"], output="\n\n".join(m["content"] for m in step[1:])) for step in chat]
        try:
            compacted = runtime.compact_oldest(self.root, steps, query=state["query"], iteration=iteration)
        except BudgetExceeded as exc:
            return self._budget_stop(runtime, state, exc, iteration=iteration)
        if compacted is None:
            return self._stop(runtime, state, "context_window", iteration=iteration)
        count, summary_text = compacted
        messages = [*head, {"role": "assistant", "content": COMPACTED_STEPS}, {"role": "user", "content": summary_text},
                    *(message for step in chat[count:] for message in step)]
        return Command(update=self._progress(runtime, messages=messages, iteration=iteration, iterations=iteration),
                       goto="root_lm")

    def root_lm(self, state: RLMState) -> Command:
        runtime = self._runtime(state)
        iteration = state["iteration"] + 1
        if iteration > self.max_iterations:
            return self._stop(runtime, state, "max_iterations")
        try:
            runtime.start_iteration(iteration)
            began = time.monotonic()
            completion = runtime.runner.run(metered_completion(self.root, state["messages"], budget=runtime.budget,
                                                               max_tokens=self.root_max_tokens))
        except BudgetExceeded as exc:
            return self._budget_stop(runtime, state, exc, iteration=iteration - 1)
        except Exception as exc:
            if not is_context_window_error(exc):
                raise
            return self._compact(runtime, state, iteration)
        runtime.record_lm_call(iteration, completion.text, prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens, seconds=time.monotonic() - began,
                               cost_usd=completion.cost_usd)
        action = parse_reply(completion.text, max_blocks=None)
        messages = [*state["messages"], {"role": "assistant", "content": action.kept_text or completion.text}]
        update: dict[str, Any] = {"iteration": iteration, "iterations": iteration, "messages": messages}
        if action.code:
            goto = "review_code" if self.review == "code" and state.get("depth", 0) == 0 else "execute"
            return Command(update=self._progress(runtime, **update, pending_code=list(action.code)), goto=goto)
        final_var = action.final if _names_a_variable(runtime, action) else action.final_var
        if final_var is not None:
            code = [f"FINAL_VAR({final_var!r})"]
            return Command(update=self._progress(runtime, **update, pending_code=code), goto="execute")
        if action.final is not None and not state.get("looked", True):
            runtime.trajectory.record("note", iteration=iteration, message="FINAL before looking at the context")
            messages.append({"role": "user", "content": premature_answer(["context"], finish="FINAL")})
            return Command(update=self._progress(runtime, **update), goto="root_lm")
        if action.final is not None:
            update["candidate"] = {"answer": action.final}
            return Command(update=self._progress(runtime, **update), goto=self._after_candidate(state))
        messages.append({"role": "user", "content": action.problem})
        return Command(update=self._progress(runtime, **update), goto="root_lm")

    def review_code(self, state: RLMState) -> Command:
        decision = interrupt({"type": "review_code", "code": "\n\n".join(state["pending_code"] or []),
                              "iteration": state["iteration"], "query": state["query"]})
        action, value = _review_decision(decision, edit_key="code")
        if action == "approve":
            return Command(goto="execute")
        if action == "edit":
            # The reviewer's own code is theirs to answer with: look-before-answering guards the model's.
            return Command(update={"pending_code": [value], "looked": True}, goto="execute")
        note = f"A reviewer rejected that code: {value or 'no reason given'}. Write different code."
        return Command(update={"pending_code": None,
                               "messages": [*state["messages"], {"role": "user", "content": note}]}, goto="root_lm")

    def execute(self, state: RLMState) -> Command:
        """Run the pending blocks in order, until one calls FINAL, fails or hits the budget."""
        runtime = self._runtime(state)
        code_log, outputs, candidate = list(state["code_log"]), [], None
        failed_cell, looked = state.get("failed_cell"), state.get("looked", True)
        blocks = state["pending_code"] or []
        for number, code in enumerate(blocks, 1):
            result = runtime.session.run_cell(code, iteration=state["iteration"])
            failed_cell = _failure_streak(failed_cell, code, result)
            output = format_cell(result)
            if failed_cell is not None and failed_cell["count"] > 1:
                output += "\n" + repeated_failure_note(failed_cell["count"])
                runtime.trajectory.record("note", iteration=state["iteration"],
                                          message=f"the same failing cell ran {failed_cell['count']} times in a row")
            if len(blocks) > 1:
                output = f"[block {number} of {len(blocks)}]\n{output}"
                if result.error is not None and number < len(blocks):
                    output += (f"\nBlock {number} failed, so the {len(blocks) - number} block(s) after it "
                               "were not run.")
            outputs.append(output)
            if result.restarted:
                code_log = []  # the worker was replaced: nothing before this cell survives to replay
                runtime.session.call_log.entries.clear()
            else:
                code_log.append(code)
            if result.limit == "budget":
                exc = cap_of(result, runtime.budget)
                messages = [*state["messages"], {"role": "user", "content": output_message(outputs)}]
                return self._budget_stop(runtime, state, exc, code_log=code_log, pending_code=None,
                                         call_log=list(runtime.session.call_log.entries), messages=messages,
                                         failed_cell=failed_cell)
            looked = looked or reads_inputs(code, ["context"])
            if result.has_final and not looked:
                # Look before answering: no code has read the context yet.
                runtime.trajectory.record("note", iteration=state["iteration"],
                                          message="FINAL before looking at the context")
                outputs[-1] += "\n" + premature_answer(["context"], finish="FINAL")
                break
            if result.has_final:
                candidate = {"answer": result.final}
                break
            if result.error is not None:
                break
        messages = [*state["messages"], {"role": "user", "content": output_message(outputs)}]
        update = {"messages": messages, "code_log": code_log, "call_log": list(runtime.session.call_log.entries),
                  "pending_code": None, "candidate": candidate, "failed_cell": failed_cell, "looked": looked}
        goto = self._after_candidate(state) if candidate is not None else "root_lm"
        return Command(update=self._progress(runtime, **update), goto=goto)

    def review_final(self, state: RLMState) -> Command:
        answer = (state.get("candidate") or {}).get("answer")
        decision = interrupt({"type": "review_final", "answer": answer, "iteration": state["iteration"],
                              "query": state["query"]})
        action, value = _review_decision(decision, edit_key="answer")
        after = "evaluate" if self.evaluator is not None else "finalize"
        if action == "approve":
            return Command(update={"answer": answer, "stop_reason": "final"}, goto=after)
        if action == "edit":
            return Command(update={"candidate": {"answer": value}, "answer": value, "stop_reason": "final"},
                           goto=after)
        note = f"A reviewer rejected that answer: {value or 'no reason given'}. Keep working, then call FINAL again."
        return Command(update={"candidate": None, "messages": [*state["messages"], {"role": "user", "content": note}]},
                       goto="root_lm")

    def evaluate(self, state: RLMState) -> Command:
        """The checkpoints on a candidate answer: grounding first (code only), then the user's evaluator."""
        runtime = self._runtime(state)
        answer = (state.get("candidate") or {}).get("answer")
        checkpoint, evaluation = "grounding", self._grounding(runtime, state, answer) if self._grounded(state) else None
        if evaluation is None or evaluation.passed:
            if self.evaluator is None:
                return Command(update=self._progress(runtime, answer=answer, stop_reason="final"), goto="finalize")
            checkpoint, evaluation = "evaluator", self.evaluator(state["query"], answer, runtime.trajectory)
        verdict = runtime.judge(RefinementState.from_dict(state.get("refinement")), answer, evaluation,
                                checkpoint=checkpoint, iteration=state["iteration"],
                                max_refinements=self.max_refinements, min_gain=self.min_gain)
        if verdict.action == "refine":
            messages = [*state["messages"], {"role": "user", "content": feedback_message(evaluation)}]
            return Command(update=self._progress(runtime, messages=messages, candidate=None,
                                                 refinement=verdict.state.to_dict()), goto="root_lm")
        return Command(update=self._progress(runtime, answer=verdict.answer, stop_reason=verdict.reason,
                                             refinement=verdict.state.to_dict()), goto="finalize")

    @staticmethod
    def _grounding(runtime: _Runtime, state: RLMState, answer: Any) -> Evaluation:
        """Whether ``answer``'s load-bearing tokens occur in the context, the query or the REPL's outputs."""
        check = GroundingCheck({"context": runtime.session.context, "query": state["query"]},
                               example_values=EXAMPLE_VALUES)
        for message in state["messages"][2:]:
            if message["role"] == "user":
                check.add(message["content"])
        return check(answer)

    def extract(self, state: RLMState) -> Command:
        """The answer of a run stopped at a cap: one LM call (the one held from the start) reads
        the query and what the REPL printed, and answers in plain text."""
        runtime = self._runtime(state)
        reason = state["stop_reason"]
        held = runtime.take_extract_hold()
        notes = [m["content"] for m in state["messages"][2:] if m["role"] == "user"]
        messages = _extract_messages(state["query"], notes, reason)
        while notes and held is not None and held.tokens and \
                estimate_prompt_tokens(messages) + self.root_max_tokens > held.tokens:
            notes = notes[1:]  # the oldest first: the latest outputs are the likeliest to hold the answer
            messages = _extract_messages(state["query"], notes, reason)
        try:
            began = time.monotonic()
            completion = runtime.runner.run(metered_completion(self.root, messages, budget=runtime.budget,
                                                               max_tokens=self.root_max_tokens, held=held))
        except BudgetExceeded as exc:
            runtime.record_cap(exc, what="extract skipped")
            return Command(update=self._progress(runtime), goto="finalize")
        except Exception as exc:
            if not is_context_window_error(exc):
                raise
            runtime.trajectory.record("note", message="extract skipped: its prompt was longer than the model's window")
            return Command(update=self._progress(runtime), goto="finalize")
        runtime.record_lm_call(state["iteration"], completion.text, prompt_tokens=completion.prompt_tokens,
                               completion_tokens=completion.completion_tokens, seconds=time.monotonic() - began,
                               step="extract")
        answer = self._extracted_answer(runtime, completion.text, iteration=state["iteration"])
        if answer is None:
            runtime.trajectory.record("note", message="extract gave no answer: its reply was code, or empty")
        return Command(update=self._progress(runtime, answer=answer), goto="finalize")

    @staticmethod
    def _extracted_answer(runtime: _Runtime, text: str, *, iteration: int) -> Any:
        """The answer in an extract reply: a FINAL/FINAL_VAR line (names read from the REPL), else the
        reply's text; ``None`` for a reply that is code (nothing runs any more) or empty."""
        action = parse_reply(text)
        if action.code:
            return None
        name = action.final if _names_a_variable(runtime, action) else action.final_var
        if name is not None:
            result = runtime.session.run_cell(f"FINAL_VAR({name!r})", iteration=iteration)
            if result.has_final:
                return result.final
        if action.final is not None:
            return action.final
        return without_code_blocks(text).strip() or None

    def finalize(self, state: RLMState) -> dict[str, Any]:
        runtime = state.get("runtime")
        answer = state.get("answer")
        if answer is None and state.get("candidate"):
            answer = state["candidate"].get("answer")
        reason = state.get("stop_reason") or "final"
        update: dict[str, Any] = {"answer": answer, "stop_reason": reason, "iterations": state.get("iteration", 0),
                                  "runtime": None, "turn_open": False}
        if runtime is None or runtime.closed:
            return update
        if state.get("parent") is not None:
            runtime.record_final(answer, reason, iteration=state.get("iteration", 0))
            runtime.close()  # first: it gives back the call held for `extract`, if unused
            return {**update, "usage": runtime.budget.spent(), "events": runtime.trajectory}
        runtime.writer = _stream_writer()
        runtime.record_final(answer, reason, iteration=state.get("iteration", 0))
        runtime.end_turn()  # first: it gives back the call held for `extract`, if unused
        turn = Turn(query=state["query"], answer=answer, stop_reason=reason, iterations=state.get("iteration", 0),
                    variables=made_variables(state.get("variables_before") or [], _names(runtime)),
                    usage=usage_since(runtime.budget.spent(), state.get("turn_start") or {}))
        turns = [*(state.get("turns") or []), turn.to_dict()]
        key = _thread_key()
        if self.live is not None and key is not None:
            runtime.writer = None  # this run's stream (it holds the graph: a kept one would keep the graph alive)
            self.live.keep(key, runtime, turns=len(turns), cells=len(state.get("code_log") or []))
        else:
            runtime.close()
        return {**update, "usage": turn.usage, "events": runtime.trajectory, "turns": turns}


def _as_deltas(node: Callable[[RLMState], Any]) -> Callable[[RLMState], Any]:
    """``node``, writing only what it added to each growing value (the log channels and
    ``events``), so a checkpoint stores that part alone."""

    def run(state: RLMState) -> Any:
        result = node(state)
        if isinstance(result, Command) and isinstance(result.update, dict):
            return dataclasses.replace(result, update=_deltas(state, result.update))
        return _deltas(state, result) if isinstance(result, dict) else result

    run.__name__ = node.__name__
    return run


def _deltas(state: RLMState, update: dict[str, Any]) -> dict[str, Any]:
    """``update`` with each whole growing value replaced by its delta against ``state``, and the
    run's trajectory (nodes give ``events`` as the live :class:`Trajectory`) by what it added."""
    update = dict(update)
    for key in LOG_KEYS:
        if key in update:
            delta = _log_delta(state.get(key) or [], update[key])
            update[key] = delta if isinstance(delta, Overwrite) else {"append": delta}
    if "events" in update:
        update["events"] = _events_delta(state.get("events") or {}, update["events"])
    return update


def _log_delta(old: list[Any], new: list[Any]) -> list[Any] | Overwrite:
    """The items ``new`` appends to ``old``, or an ``Overwrite`` when ``new`` does not extend ``old``."""
    n = len(old)
    return new[n:] if len(new) >= n and new[:n] == old else Overwrite(new)


def _events_delta(old: dict[str, Any], trajectory: Trajectory) -> dict[str, Any] | Overwrite:
    """The events and children ``trajectory`` added to ``old`` (see :func:`_extend_events`), or an
    ``Overwrite`` when ``old`` is another trajectory's or ``trajectory`` changed an event already
    saved (a refusal group's count that went up after its super-step)."""
    value, whole = trajectory.changes_since(old)
    return Overwrite(value) if whole else value


def _chat_steps(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The root's chat after its opening, as steps: each assistant message with the messages that
    answered it (a cell's output, a reviewer's or evaluator's feedback)."""
    steps: list[list[dict[str, str]]] = []
    for message in messages:
        if message["role"] == "assistant" or not steps:
            steps.append([message])
        else:
            steps[-1].append(message)
    return steps


def _names(runtime: _Runtime) -> list[str]:
    """The names defined in the REPL now; none when its worker is gone."""
    try:
        return runtime.session.repl.variables()
    except SandboxError:
        return []


def _names_a_variable(runtime: _Runtime, action: Action) -> bool:
    """Whether a text ``FINAL(x)`` names a variable of the REPL (then ``x`` is its value, not the word)."""
    return action.final_is_name and action.final in runtime.session.repl.variables()


def _failure_streak(streak: dict[str, Any] | None, code: str, result: CellResult) -> dict[str, Any] | None:
    """How many times in a row the same code has failed, after ``result``; ``None`` after a success."""
    if result.error is None or result.has_final:
        return None
    key = _code_key(code)
    if streak is not None and streak["code"] == key:
        return {"code": key, "count": streak["count"] + 1}
    return {"code": key, "count": 1}


def _code_key(code: str) -> str:
    """``code`` without the differences that do not change what it does: blank lines, trailing spaces."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def _extract_messages(query: str, notes: list[str], stopped_by: str) -> list[dict[str, str]]:
    """The chat ``extract`` sends: its own system prompt, then the query with ``notes``."""
    return [{"role": "system", "content": EXTRACT_SYSTEM_PROMPT},
            {"role": "user", "content": extract_request(query, notes, stopped_by)}]


def _review_decision(decision: Any, *, edit_key: str) -> tuple[str, Any]:
    """Normalize a resume value: True/"approve", {"action": "edit", edit_key: ...}, False/"reject"/{"feedback"}."""
    if decision is True or decision in ("approve", "approved", "accept", None):
        return "approve", None
    if decision is False or decision in ("reject", "rejected"):
        return "reject", None
    if isinstance(decision, Mapping):
        action = decision.get("action", "approve")
        if action in ("approve", "accept"):
            return "approve", None
        if action == "edit" and edit_key in decision:
            return "edit", decision[edit_key]
        if action == "reject":
            return "reject", decision.get("feedback")
    raise ValueError(f"resume the review with True (approve), False (reject), {{'action': 'edit', "
                     f"'{edit_key}': ...}} or {{'action': 'reject', 'feedback': ...}}; got {decision!r:.200}")


def create_rlm_graph(
    model: Any,
    *,
    sub_model: Any = None,
    max_depth: int | None = None,
    budget: Budget | None = None,
    evaluator: Any = None,
    max_refinements: int = 2,
    min_gain: float = 0.01,
    review: Review | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    system_prompt: str | None = None,
    checkpointer: BaseCheckpointSaver | bool | None = None,
    store: BaseStore | None = None,
    cache_sub_calls: bool = False,
    name: str = "rlm",
    max_iterations: int = 20,
    root_max_tokens: int = 2048,
    api_base: str | None = None,
    api_key: str | None = None,
    sandbox_options: SandboxOptions = SandboxOptions(),
    look_before_answer: bool = True,
    grounding: bool = True,
    tracer_provider: TracerProvider | None = None,
    budget_scope: BudgetScope = "turn",
    keep_sessions: int = 8,
) -> RLMGraph:
    """Build and compile an RLM graph: a root LM that answers a query by writing code in a REPL
    over a long context, one REPL iteration per super-step, every super-step a checkpoint.

    Input Format:
        A dict (``RLMInput``):

        - ``query`` (str, required): the question.
        - ``context`` (str or list of str): the text to work on, a variable in the REPL. It goes
          to the graph's ``store`` before the graph sees it; checkpoints hold a reference.
          Without it, on a thread of a graph with a checkpointer whose last question finished,
          the input is a follow-up question over the same context and REPL.
        - ``context_ref`` (str): a reference to a context already in the store, instead of
          ``context``.

        ``None`` (with the thread's config) resumes a run from its last checkpoint;
        ``Command(resume=...)`` answers a review (see ``review``).

    Output Format:
        A dict (``RLMOutput``), the same result contract as ``rlm_dspy.RLM``'s prediction:

        - ``answer``: the ``FINAL`` value (any JSON value), or ``None`` when the run stopped
          without one.
        - ``stop_reason`` (str): why it stopped, one of :data:`sandbox.engine.stops.STOP_REASONS`:
          ``"final"``, ``"accepted"``, ``"no_improvement"``, ``"max_refinements"`` (an answer
          settled on) or ``"max_iterations"``, a budget cap's name (``"max_llm_calls"``,
          ``"max_tokens"``, ``"max_cost_usd"``, ``"max_seconds"``), ``"context_window"`` (a
          partial answer, or none).
        - ``iterations`` (int): the root-loop iterations run.
        - ``usage`` (dict): what the call tree spent: ``iterations``, ``llm_calls``, ``tokens``,
          ``prompt_tokens``, ``completion_tokens``, ``cost_usd``, ``seconds``.
        - ``events`` (dict): the event tree, ``{"query", "depth", "events": [...],
          "children": [...]}`` (:meth:`sandbox.engine.trajectory.Trajectory.to_dict`), a child RLM's
          tree among ``children``; the same shape as the DSPy prediction's ``events``.
        - ``turns`` (list of dict): the thread's finished questions (:class:`sandbox.engine.turns.Turn`).

    Stream Format:
        With ``stream_mode="custom"``, each event of the tree as it is recorded: the same dict
        as in ``events``, with ``kind`` (``"iteration"``, ``"lm_call"``, ``"cell"``,
        ``"sub_call"``, ``"rlm_query"``, ``"search"``, ``"evaluation"``, ``"compaction"``,
        ``"budget"``, ``"final"``, ``"note"``; :data:`sandbox.engine.trajectory.EVENT_KINDS`),
        ``depth``, ``t`` (seconds since the run started) and the kind's own fields, e.g.
        ``{"kind": "cell", "depth": 0, "t": 1.2, "iteration": 1, "code": "...", "output": "...",
        "error": None, ...}``. A ``budget`` event's ``limit`` names the cap, as the
        ``stop_reason`` does.

    Args:
        model: the root LM: a LangChain chat model or a litellm model string.
        sub_model: the model of ``llm_query`` and friends (default: ``model``).
        max_depth: how deep ``rlm_query`` may start child RLMs (default: the budget's, 1).
        budget: caps for the whole call tree (a :class:`sandbox.Budget`); each run gets a fresh
            ledger on these terms.
        evaluator: checks each answer: a ``(query, answer[, trajectory]) -> Evaluation``
            callable or an ``LMJudge``; a rejected answer goes back to the model as feedback.
        max_refinements: how many times a rejected answer is sent back.
        min_gain: the least score gain between rounds that keeps refining.
        review: ``"code"`` pauses with ``interrupt()`` before each cell, ``"final"`` before
            accepting the answer; resume with ``Command(resume=True | False | {"action":
            "edit", "code" | "answer": ...} | {"action": "reject", "feedback": ...})``.
        tools: functions callable from the REPL, by name.
        system_prompt: replaces the opening instructions (the REPL documentation is kept).
        checkpointer: a LangGraph checkpointer (runs then default to ``durability="sync"``,
            see :class:`RLMGraph`), or ``True``/``False`` as LangGraph takes them.
        store: where contexts are kept, content-addressed (default: a new ``InMemoryStore``);
            to resume in another process, give every worker the same durable store
            (``PostgresStore``, ``SqliteStore``) with the checkpointer.
        cache_sub_calls: answer an ``llm_query`` prompt asked before (same sub-model and
            settings) from the store, across runs and processes, uncharged
            (:mod:`sandbox.engine.subcall_cache`).
        name: the compiled graph's name.
        max_iterations: the root loop's iteration cap; reaching it stops the run with
            ``stop_reason="max_iterations"``.
        root_max_tokens: the completion cap of one root LM call.
        api_base: the endpoint of string models (an OpenAI-compatible server).
        api_key: the key of string models.
        sandbox_options: the REPL's limits (:class:`~sandbox.engine.session.SandboxOptions`; its
            defaults are every entry point's).
        look_before_answer: over a context longer than ``sandbox.engine.grounding.SEEN_WHOLE_CHARS``
            (1,000), refuse a ``FINAL`` that comes before any code has read it.
        grounding: over such a context, check before any ``evaluator`` that the answer's
            numbers, names and quoted strings occur in the context, the query or the REPL's
            outputs; a failed check goes back to the model as feedback.
        tracer_provider: where OpenTelemetry spans of the call tree go (default: the
            application's global provider; :mod:`sandbox.engine.tracing`).
        budget_scope: for follow-up questions, ``"turn"`` gives each the budget's caps afresh,
            ``"session"`` makes them cover all the questions of a thread.
        keep_sessions: the live REPLs of this many most recent threads are kept for their
            follow-ups (``0``: none; a follow-up then rebuilds its REPL by replay).

    Returns:
        The compiled :class:`RLMGraph`.

    Raises:
        ValueError: ``review``, ``max_iterations``, ``max_refinements``, ``budget_scope`` or
            ``keep_sessions`` is out of range.
        TypeError: ``budget`` is not a Budget, or ``store`` is not a LangGraph BaseStore.
    """
    if review not in (None, "code", "final"):
        raise ValueError(f"review must be None, 'code' or 'final', got {review!r}")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}")
    if isinstance(max_refinements, bool) or not isinstance(max_refinements, int) or max_refinements < 0:
        raise ValueError(f"max_refinements must be an integer >= 0, got {max_refinements!r}")
    limits = run_limits(budget, max_depth)
    check_scope(budget_scope)
    if isinstance(keep_sessions, bool) or not isinstance(keep_sessions, int) or keep_sessions < 0:
        raise ValueError(f"keep_sessions must be an integer >= 0, got {keep_sessions!r}")
    live = _LiveRuntimes(keep_sessions) if isinstance(checkpointer, BaseCheckpointSaver) and keep_sessions else None
    kept_contexts = None
    if store is None:
        store = InMemoryStore()
        kept_contexts = KeptContexts(store)
    elif not isinstance(store, BaseStore):
        raise TypeError(f"store must be a LangGraph BaseStore (InMemoryStore, PostgresStore, SqliteStore), "
                        f"got {type(store).__name__}")
    root = as_client(model, api_base=api_base, api_key=api_key)
    sub = root if sub_model is None else as_client(sub_model, api_base=api_base, api_key=api_key)
    if cache_sub_calls:
        sub = CachedLM(sub, SubCallCache(store))
    engine = _Engine(root=root, sub=sub, budget=Budget(**limits),
                     evaluator=as_evaluator(evaluator) if evaluator is not None else None,
                     max_refinements=max_refinements, min_gain=min_gain, review=review,
                     tools=check_user_tools(tools), instructions=system_prompt, max_iterations=max_iterations,
                     root_max_tokens=root_max_tokens, options=sandbox_options, store=store,
                     look_before_answer=look_before_answer, grounding=grounding, tracer_provider=tracer_provider,
                     budget_scope=budget_scope, live=live)
    builder = StateGraph(RLMState, input_schema=RLMInput, output_schema=RLMOutput)
    nodes = {"prepare": ("root_lm",), "root_lm": ("review_code", "execute", "review_final", "evaluate", "finalize",
                                                  "extract", "root_lm"),
             "review_code": ("execute", "root_lm"),
             "execute": ("root_lm", "review_final", "evaluate", "finalize", "extract"),
             "review_final": ("evaluate", "finalize", "root_lm"), "evaluate": ("root_lm", "finalize"),
             "extract": ("finalize",)}
    for node, destinations in nodes.items():
        builder.add_node(node, _as_deltas(engine._guarded(getattr(engine, node))), destinations=destinations)
    builder.add_node("finalize", _as_deltas(engine.finalize))
    builder.add_edge(START, "prepare")
    builder.add_edge("finalize", END)
    compiled = builder.compile(checkpointer=checkpointer, store=store, name=name)
    graph = RLMGraph(kept_contexts=kept_contexts, live=live, handed=engine.handed,
                     step_limit=STEPS_PER_ITERATION * max_iterations + STEPS_PER_RUN,
                     **{k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"})
    engine.child_graph = graph.copy({"checkpointer": False})  # children are cached by the parent's call_log
    if live is not None:
        weakref.finalize(graph, live.close)  # runs at interpreter exit at the latest: no kept worker outlives it
    return graph
