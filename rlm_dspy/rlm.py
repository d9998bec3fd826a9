"""``rlm_dspy.RLM``: a drop-in for ``dspy.RLM`` on the restricted sandbox, with budgets,
recursion, evaluator checkpoints, and optimizer-safe prompts.

Predictors are named ``generate_action`` and ``extract`` and have exactly
``dspy.RLM``'s fields, so saved programs move between the two. The REPL, tool and
``SUBMIT`` documentation travels in the ``variables_info`` *input*, never in the
tunable instructions, so an optimizer that rewrites instructions cannot erase it.
The module holds only configuration (no worker, lock or pool), so it deep-copies.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import keyword
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import dspy
import pydantic
from dspy.adapters.types.tool import Tool
from dspy.adapters.utils import parse_value, translate_field_type
from dspy.primitives.code_interpreter import SIMPLE_TYPES, CodeInterpreter
from dspy.primitives.repl_types import REPLEntry, REPLHistory, REPLVariable
from dspy.signatures.signature import ensure_signature
from dspy.utils.exceptions import AdapterParseError
from opentelemetry.trace import TracerProvider

from rlm_dspy import serializable
from rlm_dspy.code_interpreter_repl import CodeInterpreterREPL
from rlm_dspy.interpreter import RestrictedPythonInterpreter
from rlm_dspy.lm import (
    DSPyLMClient,
    as_dspy_lm,
    ametered_predict,
    max_output_tokens,
    metered_predict,
    prompt_tokens_bound,
    resolve_lm,
)
from sandbox.boundary.repl import CellResult
from sandbox.engine.bridge import ChildRunner
from sandbox.engine.budget import Budget, BudgetExceeded, Reservation, run_limits
from sandbox.engine.compaction import COMPACTED_STEPS, Step
from sandbox.engine.evaluator import Evaluation, as_evaluator, to_evaluation
from sandbox.engine.grounding import GroundingCheck, premature_answer, reads_inputs
from sandbox.engine.parsing import code_from_field, parse_reply
from sandbox.engine.prompts import repl_guide
from sandbox.engine.refinement import RefinementState, feedback_message
from sandbox.engine.run import Run, RunLink, cap_of
from sandbox.engine.session import REPL_NAMES, REPLFactory, SandboxOptions, Session
from sandbox.engine.subcall_cache import CachedLM, SubCallCache
from sandbox.engine.trajectory import Trajectory, preview
from sandbox.engine.turns import BudgetScope, Turn, check_scope, made_variables, starting_usage, summary, usage_since
from sandbox.lm.clients import is_context_window_error

logger = logging.getLogger(__name__)
RESERVED_INPUTS = REPL_NAMES | {"interpreter_factory"}  # the last is forward()'s own keyword
RESERVED_OUTPUTS = frozenset({"trajectory", "events", "final_reasoning", "stop_reason", "usage"})
InterpreterFactory = Callable[[], CodeInterpreter]

ACTION_INSTRUCTIONS = """You produce the outputs {outputs} from the inputs {inputs} by writing Python code, one step \
at a time, in a REPL where the inputs are variables. Look at the data before processing it, print small samples, \
use llm_query (or llm_query_batched, for many prompts at once) for meaning and code for counting, and call SUBMIT \
only after you have seen the output that supports it. The REPL's rules are in `variables_info`."""

EXTRACT_INSTRUCTIONS = """Based on the REPL trajectory, extract the final outputs now. Review what was gathered \
and computed, then provide the outputs."""


@dataclass(frozen=True)
class _Predict:
    """A step of the loop: call ``predictor`` (metered, from ``held`` when given) with ``inputs``."""

    predictor: dspy.Predict
    inputs: dict[str, Any]
    held: Reservation | None = None
    tokens: list[int] = field(default_factory=lambda: [0, 0])  # [prompt, completion], once it ran


@dataclass(frozen=True)
class _Unparsed:
    """What a predictor step returns when the LM's reply did not fit the signature."""

    message: str
    reply: str = ""  # the LM's raw reply


@dataclass(frozen=True)
class _TooLong:
    """What a predictor step returns when its prompt did not fit the model's window."""


@dataclass(frozen=True)
class _Cell:
    code: str
    iteration: int


@dataclass(frozen=True)
class _Compact:
    """A step of the loop: summarize the oldest ``steps`` of the history (see sandbox.engine.compaction)."""

    steps: list[Step]
    iteration: int


@dataclass(frozen=True)
class _Evaluate:
    outputs: dict[str, Any]


class _Run(Run):
    """Everything one forward call holds while it runs (the engine's :class:`~sandbox.engine.run.Run`,
    with the module and inputs it answers); closed at the end.

    ``interpreter`` is ``None`` for the restricted sandbox, else the ``CodeInterpreter`` the
    cells run on (shut down at the end when ``owned``); ``child_factory`` makes the
    interpreters of ``rlm_query`` children (``None``: the restricted sandbox).
    """

    def __init__(self, module: RLM, inputs: dict[str, Any], *, link: RunLink, depth: int,
                 interpreter: CodeInterpreter | None = None, owned: bool = True,
                 child_factory: InterpreterFactory | None = None):
        self.module, self.inputs, self.depth, self.child_factory = module, inputs, depth, child_factory
        self.summary = ""  # of the earlier turns of an RLMSession, for the root LM
        self.rules = None if interpreter is None else _execution_instructions(interpreter, child_factory if owned else None)
        # No sub-LM configured is the cell's problem, not the run's: llm_query answers with the error.
        sub_lm = DSPyLMClient(module.sub_lm if module.sub_lm is not None else dspy.settings.lm)
        if module.sub_call_cache is not None:
            sub_lm = CachedLM(sub_lm, module.sub_call_cache)
        regular = {name: value for name, value in inputs.items() if not serializable.is_serializable(value)}
        self.searched = _searched_input(regular)
        repl_factory = self._repl_factory(interpreter, owned, link.budget)

        def open_session(run_child: ChildRunner) -> Session:
            return Session(variables=regular, sub_lm=sub_lm, budget=link.budget, trajectory=link.trajectory,
                           runner=link.runner, depth=depth, tools=module.tool_functions(), run_child=run_child,
                           options=module.sandbox_options, submit_fields=list(module.signature.output_fields),
                           max_sub_calls=module.max_llm_calls, repl_factory=repl_factory,
                           search_over=self.searched or "context")

        try:
            super().__init__(link, open_session, start_child=self._start_child, engine="dspy",
                             root_model=_root_model(module), tracer_provider=module.tracer_provider)
        except BaseException:
            if interpreter is not None and owned:
                interpreter.shutdown()  # idempotent by DSPy's contract; the Session may have closed it
            raise
        try:
            self.load({name: value for name, value in inputs.items() if serializable.is_serializable(value)})
        except BaseException:
            self.close()
            raise

    def load(self, inputs: dict[str, Any]) -> None:
        """Put ``inputs`` into the REPL: ``SandboxSerializable`` ones rebuilt there, the rest as variables."""
        self.session.load({name: value for name, value in inputs.items() if not serializable.is_serializable(value)})
        for name, value in inputs.items():
            if serializable.is_serializable(value):
                serializable.load(self.session.repl, name, value)

    def next_question(self, inputs: dict[str, Any], *, trajectory: Trajectory, usage: dict[str, Any],
                      earlier: str) -> None:
        """Start the next question of an RLMSession: ``inputs`` are all of its inputs (the session's
        and the question's), ``usage`` what the ledger reads now, ``earlier`` the summary of the turns before."""
        self.inputs, self.summary = inputs, earlier
        self.spans["root_model"] = _root_model(self.module)  # the root LM may differ per question
        self.begin_turn(trajectory, usage)

    def _repl_factory(self, interpreter: CodeInterpreter | None, owned: bool, budget: Budget) -> REPLFactory | None:
        if interpreter is None:
            return None
        fields = self.module.output_fields_info()
        return lambda tools, _submit_fields: CodeInterpreterREPL(interpreter, tools=tools, output_fields=fields,
                                                                owned=owned, budget=budget)

    def _start_child(self, query: str, context: str, depth: int, link: RunLink) -> tuple[Any, str]:
        child = RLM("context, query -> answer", max_iters=self.module.max_iters,
                    max_llm_calls=self.module.max_llm_calls, max_output_chars=self.module.max_output_chars,
                    tools=list(self.module.tools.values()), sub_lm=self.module.sub_lm,
                    sandbox_options=self.module.sandbox_options, sub_call_cache=self.module.sub_call_cache)
        child.generate_action.lm = getattr(self.module.generate_action, "lm", None)
        child.extract.lm = getattr(self.module.extract, "lm", None)
        interpreter = None if self.child_factory is None else _make_interpreter(self.child_factory)
        run = _Run(child, {"context": context, "query": query}, link=link, depth=depth, interpreter=interpreter,
                   child_factory=self.child_factory)
        prediction = child._drive_sync(run)
        return prediction.answer, prediction.stop_reason


class RLM(dspy.Module):
    """Recursive Language Model for DSPy programs; same call shape as ``dspy.RLM``.

    Cells run in the restricted sandbox (``RestrictedPythonInterpreter``) unless
    ``interpreter_factory`` (here, per call, or ``dspy.configure(interpreter_factory=...)``)
    names another ``CodeInterpreter``, or a caller-owned interpreter is passed as the first
    positional argument of the call: ``rlm(interpreter, **inputs)``. See
    :mod:`rlm_dspy.code_interpreter_repl` for which guarantees hold there. The module holds
    only configuration: each call gets its own worker, ledger and event tree.

    A call returns a ``dspy.Prediction`` with the signature's output fields and:

    - ``stop_reason``: why the run stopped, one of :data:`sandbox.engine.stops.STOP_REASONS`
      (``"final"``, ``"max_iterations"``, ``"max_sub_calls"``, a budget cap's name...), the
      names ``create_rlm_graph`` reports;
    - ``events``: the event tree, ``{"query", "depth", "events": [...], "children": [...]}``,
      each event a dict with ``kind``, ``depth``, ``t`` and its own fields
      (:mod:`sandbox.engine.trajectory`), the same shape as the graph's ``events``;
    - ``usage``: what the call tree spent (``iterations``, ``llm_calls``, ``tokens``,
      ``prompt_tokens``, ``completion_tokens``, ``cost_usd``, ``seconds``);
    - ``trajectory``: DSPy's REPL history (a list of ``{reasoning, code, output}``), as
      ``dspy.RLM`` gives it;
    - ``final_reasoning``: the root LM's last reasoning.

    Args:
        signature: the task, as ``dspy.RLM`` takes it (``"context, query -> answer"`` or a class).
        max_iters: the root loop's iteration cap (dspy.RLM's name); reaching it stops the run
            with ``stop_reason="max_iterations"``.
        max_llm_calls: the cap on this RLM's own sub-calls (``llm_query`` and friends), as in
            ``dspy.RLM``; reaching it is reported as ``max_sub_calls``, not as the budget's
            ``max_llm_calls`` (which counts every LM call of the whole tree).
        max_output_chars: a cell's output as the root LM sees it (dspy.RLM's default); also the
            sandbox's output cap unless ``sandbox_options`` is given.
        verbose: log each iteration's reasoning, code and output (``logging``, at INFO).
        tools: functions (or ``dspy.Tool``s) callable from the REPL, named after the functions.
        sub_lm: the model of the sub-calls (default: ``dspy.settings.lm``); a ``dspy.BaseLM``, a
            litellm model string, ``"local"`` (the embedded model, :func:`rlm_dspy.local_lm`) or a
            one-group ``litellm.Router``.
        interpreter_factory: a zero-argument callable making the ``CodeInterpreter`` the cells run
            on (default: the restricted sandbox; ``dspy.configure(interpreter_factory=...)`` too).
        budget: caps for the whole call tree (tokens, dollars, wall clock, iterations, LM calls,
            depth); each call gets a fresh ledger on these terms.
        max_depth: how deep ``rlm_query`` may start child RLMs (default: the budget's, 1).
        evaluator: checks each answer: a ``(query, answer[, trajectory]) -> Evaluation`` callable,
            an ``LMJudge``, or a DSPy metric ``(example, prediction[, trace])``.
        max_refinements: how many times a rejected answer is sent back.
        min_gain: the least score gain between rounds that keeps refining.
        sandbox_options: the REPL's limits (default: :class:`~sandbox.engine.session.SandboxOptions`
            with ``max_output_chars``).
        on_event: called with every event of the tree as it is recorded (the same dicts as in
            ``events``, ``kind`` included), for progress displays.
        look_before_answer: over an input the model was not shown in full, refuse a ``SUBMIT``
            that comes before any code has read it.
        grounding: over such an input, check before any ``evaluator`` that the answer's numbers,
            names and quoted strings occur in the inputs or in what the cells printed from them
            (:mod:`sandbox.engine.grounding`).
        sub_call_cache: answers ``llm_query`` prompts asked before from a LangGraph store,
            uncharged (:class:`sandbox.engine.subcall_cache.SubCallCache`).
        tracer_provider: where OpenTelemetry spans of the call tree go (default: the global
            provider; :mod:`sandbox.engine.tracing`).

    Raises:
        ValueError: a cap is not a positive integer, or a tool, input or output name clashes
            with the REPL's own names or the prediction's metadata.
        TypeError: ``budget`` is not a Budget, or ``interpreter_factory`` is an interpreter.
    """

    def __init__(self, signature: type[dspy.Signature] | str, max_iters: int = 20, max_llm_calls: int = 50,
                 max_output_chars: int = SandboxOptions.max_output_chars, verbose: bool = False,
                 tools: list[Callable[..., Any]] | None = None, sub_lm: dspy.BaseLM | str | None = None,
                 interpreter_factory: InterpreterFactory = RestrictedPythonInterpreter, *,
                 budget: Budget | None = None, max_depth: int | None = None,
                 evaluator: Callable[..., Any] | None = None, max_refinements: int = 2, min_gain: float = 0.01,
                 sandbox_options: SandboxOptions | None = None, on_event: Callable[[dict], None] | None = None,
                 look_before_answer: bool = True, grounding: bool = True,
                 sub_call_cache: SubCallCache | None = None, tracer_provider: TracerProvider | None = None):
        super().__init__()
        _check_factory(interpreter_factory, "interpreter_factory")
        self.signature = ensure_signature(signature)
        for name, value in (("max_iters", max_iters), ("max_llm_calls", max_llm_calls),
                            ("max_output_chars", max_output_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.budget_limits = run_limits(budget, max_depth)  # plain data: each call gets its own ledger
        self.max_iters, self.max_llm_calls, self.max_output_chars = max_iters, max_llm_calls, max_output_chars
        self.verbose = verbose
        self.sub_lm = as_dspy_lm(sub_lm)
        self.sub_call_cache = sub_call_cache
        self.tracer_provider = tracer_provider  # None: the global one (OpenTelemetry spans, see sandbox.engine.tracing)
        self._interpreter_factory = interpreter_factory  # dspy.RLM's attribute name
        self.tools = _normalize_tools(tools)
        self._check_names()
        self.evaluator = evaluator
        self.on_event = on_event  # called with every trajectory event of a run (for progress displays)
        self.max_refinements, self.min_gain = max_refinements, min_gain
        self.look_before_answer, self.grounding = look_before_answer, grounding
        self.sandbox_options = sandbox_options or SandboxOptions(max_output_chars=max_output_chars)
        action, extract = self._signatures()
        self.generate_action = dspy.Predict(action)
        self.extract = dspy.Predict(extract)

    # -- construction ------------------------------------------------------------------

    def _check_names(self) -> None:
        """Refuse names the REPL cannot hold; each message starts with ``dspy.RLM``'s own words."""
        inputs, outputs = set(self.signature.input_fields), set(self.signature.output_fields)
        for name in self.tools:
            if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
                raise ValueError(f"Invalid tool name '{name}': must be a valid Python identifier and not a keyword "
                                 "(nor start with '_', which sandboxed code cannot use)")
            if name in RESERVED_INPUTS:
                raise ValueError(f"Tool name '{name}' conflicts with built-in sandbox function "
                                 f"(reserved: {', '.join(sorted(RESERVED_INPUTS))}); rename the tool")
        if inputs & RESERVED_INPUTS:
            raise ValueError(f"Input fields conflict with built-in sandbox functions: {sorted(inputs & RESERVED_INPUTS)}"
                             f" (reserved: {', '.join(sorted(RESERVED_INPUTS))}); rename them")
        if inputs & set(self.tools):
            raise ValueError(f"Input fields conflict with user tools: {sorted(inputs & set(self.tools))}; "
                             "rename the fields or the tools")
        bad = sorted(n for n in inputs | outputs if n.startswith("_") or keyword.iskeyword(n))
        if bad:
            raise ValueError(f"field names {bad} cannot be REPL variables (no leading '_', no keywords)")
        if outputs & RESERVED_OUTPUTS:
            raise ValueError(f"Output fields conflict with RLM result metadata: {sorted(outputs & RESERVED_OUTPUTS)}"
                             f" (the result also carries {', '.join(sorted(RESERVED_OUTPUTS))}); rename them")

    def output_fields_info(self) -> list[dict[str, Any]]:
        """``SUBMIT``'s fields as DSPy's interpreters take them: a name, and a type where it is a simple one."""
        fields = []
        for name, spec in self.signature.output_fields.items():
            annotation = getattr(spec, "annotation", str)
            fields.append({"name": name, **({"type": annotation.__name__} if annotation in SIMPLE_TYPES else {})})
        return fields

    def _signatures(self) -> tuple[type[dspy.Signature], type[dspy.Signature]]:
        task = f"{self.signature.instructions}\n\n" if self.signature.instructions else ""
        inputs = ", ".join(f"`{n}`" for n in self.signature.input_fields)
        outputs = ", ".join(f"`{n}`" for n in self.signature.output_fields)
        action = (dspy.Signature({}, task + ACTION_INSTRUCTIONS.format(inputs=inputs, outputs=outputs))
                  .append("variables_info", dspy.InputField(desc="The REPL's rules and the variables in it"), type_=str)
                  .append("repl_history", dspy.InputField(desc="Previous code and its output"), type_=REPLHistory)
                  .append("iteration", dspy.InputField(desc="Current iteration (1-indexed) of max_iters"), type_=str)
                  .append("reasoning", dspy.OutputField(desc="What do you know, what remains, what next?"), type_=str)
                  .append("code", dspy.OutputField(desc="Python code to run, in a ```python block"), type_=str))
        extract = dspy.Signature({**self.signature.output_fields}, task + EXTRACT_INSTRUCTIONS)
        extract = extract.prepend("repl_history", dspy.InputField(desc="Your REPL interactions"), type_=REPLHistory)
        extract = extract.prepend("variables_info", dspy.InputField(desc="The variables in the REPL"), type_=str)
        return action, extract

    def tool_functions(self) -> dict[str, Callable[..., Any]]:
        return {name: tool.func for name, tool in self.tools.items()}

    def _guide(self, run: _Run) -> str:
        fields = ", ".join(f"{translate_field_type(n, f)}" for n, f in self.signature.output_fields.items())
        submit = (f"Finish with SUBMIT({', '.join(self.signature.output_fields)}) "
                  f"(keyword arguments work too). Outputs: {fields}")
        return repl_guide(max_output_chars=self.max_output_chars, can_recurse=run.budget.allows_depth(run.depth + 1),
                          tools=self.tool_functions(), rules=run.rules, searched=run.searched).replace(
            "- `FINAL(answer)`: finish with `answer`. `FINAL_VAR(name)`: finish with the variable called `name`.",
            f"- {submit}")

    def _build_variables(self, **inputs: Any) -> list[REPLVariable]:
        """How the root LM is told about each input: type, length, a preview, and the field's description."""
        return [serializable.repl_variable(name, value, self.signature.input_fields.get(name))
                for name, value in inputs.items()]

    @staticmethod
    def _format_output(output: str) -> str:
        """A cell's output as the root LM sees it (``dspy.RLM``'s nudge when nothing was printed)."""
        return output or "(no output - did you forget to print?)"

    # -- one call ----------------------------------------------------------------------

    def _check_inputs(self, inputs: dict[str, Any], *, partial: bool = False) -> None:
        """Refuse inputs the signature does not declare, or cannot load; with ``partial``, some may be missing."""
        expected = set(self.signature.input_fields)
        if "interpreter" in inputs and "interpreter" not in expected:
            raise TypeError("a caller-owned interpreter goes as the first positional argument when calling the "
                            "module: rlm(interpreter, **inputs); use interpreter_factory=... for one the RLM "
                            "creates and shuts down")
        if set(inputs) - expected:
            raise ValueError(f"Unexpected inputs not declared in the signature: {sorted(set(inputs) - expected)}")
        if expected - set(inputs) and not partial:
            raise ValueError(f"Missing required inputs: {sorted(expected - set(inputs))}")
        for name, value in inputs.items():
            if isinstance(value, str) or serializable.is_serializable(value):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(f"input {name!r} is a {type(value).__name__}; RLM inputs must be str or JSON "
                                "values (convert it first, e.g. str(value) or value.model_dump())") from None
        if self.sub_lm is not None:
            resolve_lm(self.sub_lm, "sub-calls (llm_query)")

    def _factory(self, override: InterpreterFactory | None) -> InterpreterFactory | None:
        """The factory of this call's interpreters, as ``dspy.RLM`` picks it (the call's, the module's,
        then ``dspy.settings.interpreter_factory``); ``None`` for the restricted sandbox."""
        if override is not None:
            _check_factory(override, "interpreter_factory")
            factory = override
        elif self._interpreter_factory is not RestrictedPythonInterpreter:
            factory = self._interpreter_factory
        else:
            factory = dspy.settings.get("interpreter_factory")
            if factory is not None:
                _check_factory(factory, "dspy.settings.interpreter_factory")
        return None if factory is RestrictedPythonInterpreter else factory

    def _open_run(self, inputs: dict[str, Any], interpreter: CodeInterpreter | None,
                  factory: InterpreterFactory | None, *, partial: bool = False) -> _Run:
        self._check_inputs(inputs, partial=partial)
        if interpreter is not None and factory is not None:
            raise TypeError("pass a caller-owned interpreter or interpreter_factory=..., not both")
        if interpreter is not None and not isinstance(interpreter, CodeInterpreter):
            raise TypeError(f"interpreter must implement CodeInterpreter (tools, start, execute, shutdown), "
                            f"not {type(interpreter).__name__}")
        child_factory = self._factory(factory)
        owned = interpreter is None
        if interpreter is None and child_factory is not None:
            interpreter = _make_interpreter(child_factory)
        budget = Budget(**self.budget_limits)
        budget.start()
        trajectory = Trajectory(_describe(inputs))
        if self.on_event is not None:
            trajectory.subscribe(self.on_event)
        return _Run(self, inputs, link=RunLink.new(budget, trajectory), depth=0, interpreter=interpreter,
                    owned=owned, child_factory=child_factory)

    def forward(self, interpreter: CodeInterpreter | None = None, /, *,
                interpreter_factory: InterpreterFactory | None = None, **inputs: Any) -> dspy.Prediction:
        """Answer from ``inputs``.

        Args:
            interpreter: a caller-owned ``CodeInterpreter`` for the cells; it gets this call's tools
                and is left running (the caller shuts it down).
            interpreter_factory: for this call only, a zero-argument callable that creates the
                interpreter; it is shut down at the end, also on failure.
            **inputs: the signature's input fields.

        Returns:
            A ``dspy.Prediction`` with the output fields, ``stop_reason``, ``events``, ``usage``,
            ``trajectory`` and ``final_reasoning`` (see :class:`RLM`).

        Raises:
            ValueError: an input is missing or not in the signature.
            TypeError: a bad interpreter or factory, or an input the REPL cannot load.
            CodeInterpreterError: the interpreter failed (its process died, its protocol broke).
        """
        return self._drive_sync(self._open_run(inputs, interpreter, interpreter_factory))

    async def aforward(self, interpreter: CodeInterpreter | None = None, /, *,
                       interpreter_factory: InterpreterFactory | None = None, **inputs: Any) -> dspy.Prediction:
        """:meth:`forward`, awaiting the root LM calls; cells run on a worker thread."""
        run = await asyncio.to_thread(self._open_run, inputs, interpreter, interpreter_factory)
        steps = self._steps(run)
        try:
            step = next(steps)
            while True:
                try:
                    value = await self._aperform(run, step)
                except BudgetExceeded as exc:
                    step = steps.throw(exc)
                    continue
                step = steps.send(value)
        except StopIteration as done:
            return done.value
        finally:
            await asyncio.to_thread(run.close)

    def session(self, *, budget_scope: BudgetScope = "turn", **inputs: Any) -> RLMSession:
        """Load ``inputs`` once and answer several questions over them: see :class:`RLMSession`.

        Args:
            budget_scope: ``"turn"``: each question gets the budget's caps afresh; ``"session"``:
                the caps cover every question of the session.
            **inputs: some of the signature's input fields (typically the long context); each
                question gives the others.

        Returns:
            The open session; close it (or use it in a ``with`` block) to stop its worker.

        Raises:
            ValueError: an input is not in the signature, or ``budget_scope`` is unknown.
            TypeError: an input the REPL cannot load.
        """
        return RLMSession(self, inputs, budget_scope=check_scope(budget_scope))

    def _drive_sync(self, run: _Run) -> dspy.Prediction:
        try:
            return self._drive_steps(run)
        finally:
            run.close()

    def _drive_steps(self, run: _Run) -> dspy.Prediction:
        steps = self._steps(run)
        try:
            step = next(steps)
            while True:
                try:
                    value = self._perform(run, step)
                except BudgetExceeded as exc:
                    step = steps.throw(exc)
                    continue
                step = steps.send(value)
        except StopIteration as done:
            return done.value

    def _perform(self, run: _Run, step: Any) -> Any:
        if isinstance(step, _Predict):
            try:
                return metered_predict(run.budget, step.predictor, step.held, step.tokens, **step.inputs)
            except Exception as exc:
                return _recoverable(exc)
        if isinstance(step, _Cell):
            return run.session.run_cell(step.code, iteration=step.iteration)
        if isinstance(step, _Compact):
            return self._compact(run, step)
        return self._evaluate(run, step.outputs)

    def _compact(self, run: _Run, step: _Compact) -> tuple[int, str] | None:
        """The history's oldest steps summarized by the root LM (:meth:`Run.compact_oldest`)."""
        lm = DSPyLMClient(resolve_lm(getattr(self.generate_action, "lm", None), "RLM's root predictors"))
        return run.compact_oldest(lm, step.steps, query=run.trajectory.query, iteration=step.iteration)

    async def _aperform(self, run: _Run, step: Any) -> Any:
        if isinstance(step, _Predict):
            try:
                return await ametered_predict(run.budget, step.predictor, step.held, step.tokens, **step.inputs)
            except Exception as exc:
                return _recoverable(exc)
        return await asyncio.to_thread(self._perform, run, step)

    def _evaluate(self, run: _Run, outputs: dict[str, Any]) -> Evaluation:
        evaluator = self.evaluator
        answer = _answer_of(outputs)
        if _is_dspy_metric(evaluator):
            result = evaluator(dspy.Example(**run.inputs).with_inputs(*run.inputs), dspy.Prediction(**outputs))
            return to_evaluation(result)
        return as_evaluator(evaluator)(run.trajectory.query, answer, run.trajectory)

    def _steps(self, run: _Run) -> Generator[Any, Any, dspy.Prediction]:
        """The RLM loop as a sequence of steps; the drivers perform them (sync or async)."""
        history = REPLHistory(max_output_chars=self.max_output_chars)
        described = self._build_variables(**run.inputs)
        variables = [self._guide(run), *([run.summary] if run.summary else []), *(v.format() for v in described)]
        # The checks for grounded answers apply to inputs the model was not shown in full (a long
        # context); over inputs it saw whole, it may answer at once, as with dspy.RLM.
        unseen = [v.name for v in described if len(v.preview) < v.total_length]
        must_look = bool(unseen) and self.look_before_answer
        touched = False  # whether code has read an unseen input yet: what cells print from then on counts
        grounding = GroundingCheck(run.inputs) if unseen and self.grounding else None
        refinement, stop_reason, reasoning = RefinementState(), "max_iterations", ""
        for iteration in range(1, self.max_iters + 1):
            try:
                run.start_iteration(iteration)
                began = time.monotonic()
                call = _Predict(self.generate_action, {"variables_info": variables, "repl_history": history,
                                                       "iteration": f"{iteration}/{self.max_iters}"})
                action = yield call
            except BudgetExceeded as exc:
                stop_reason = run.record_cap(exc)
                break
            if isinstance(action, _TooLong):
                # The history outgrew the root model's window: its oldest steps become a summary.
                entries = list(history)
                try:
                    compacted = yield _Compact([Step(said=f"{e.reasoning}\n{e.code}".strip(), output=e.output)
                                                for e in entries], iteration)
                except BudgetExceeded as exc:
                    stop_reason = run.record_cap(exc)
                    break
                if compacted is None:
                    stop_reason = "context_window"
                    break
                count, summary_text = compacted
                history = REPLHistory(entries=[REPLEntry(reasoning=COMPACTED_STEPS, code="", output=summary_text),
                                               *entries[count:]], max_output_chars=self.max_output_chars)
                continue
            if isinstance(action, _Unparsed):
                fenced = parse_reply(action.reply)
                if not fenced.code:
                    run.trajectory.record("note", iteration=iteration, message=preview(action.message, 500))
                    history = history.append(reasoning="", code="", output="[Error] Your reply did not follow the "
                                             "output format (fields `reasoning` and `code`). Answer in that format.")
                    continue
                # Small models often drop the field markers but still write one good code block: run it.
                run.trajectory.record("note", iteration=iteration,
                                      message="the reply ignored the field format; its first code block was run")
                action = dspy.Prediction(reasoning="", code="\n".join(fenced.code))
            reasoning = str(getattr(action, "reasoning", "") or "")
            parsed = code_from_field(getattr(action, "code", None))
            run.record_lm_call(iteration, f"{reasoning}\n{action.code}", prompt_tokens=call.tokens[0],
                               completion_tokens=call.tokens[1], seconds=time.monotonic() - began)
            if parsed.problem:
                history = history.append(reasoning=reasoning, code=str(action.code), output=f"[Error] {parsed.problem}")
                continue
            code = "\n".join(parsed.code)
            result = yield _Cell(code, iteration)
            if self.verbose:
                logger.info("RLM iteration %d/%d\nReasoning: %s\nCode:\n%s\nOutput:\n%s", iteration,
                            self.max_iters, reasoning, code, self._cell_output(result))
            if result.limit == "budget":
                stop_reason = run.record_cap(cap_of(result, run.budget))
                history = history.append(reasoning=reasoning, code=code, output=self._cell_output(result))
                break
            touched = touched or (bool(unseen) and reads_inputs(code, unseen))
            if touched and grounding is not None and result.error is None:
                grounding.add(result.output)
            if not result.has_final:
                history = history.append(reasoning=reasoning, code=code, output=self._cell_output(result))
                continue
            outputs, error = self._typed_outputs(result.final)
            if error:
                history = history.append(reasoning=reasoning, code=code, output=error)
                continue
            if must_look and not touched:
                run.trajectory.record("note", iteration=iteration, message="SUBMIT before looking at the inputs")
                history = history.append(reasoning=reasoning, code=code, output=self._cell_output(result)
                                         + "\n" + premature_answer(unseen, finish="SUBMIT"))
                continue
            history = history.append(reasoning=reasoning, code=code, output=f"FINAL: {outputs}")
            checkpoint, evaluation = "grounding", grounding(_answer_text(outputs)) if grounding else None
            if evaluation is None or evaluation.passed:
                if self.evaluator is None:
                    return self._prediction(run, outputs, history, reasoning, "final")
                checkpoint, evaluation = "evaluator", (yield _Evaluate(outputs))
            verdict = run.judge(refinement, outputs, evaluation, checkpoint=checkpoint, iteration=iteration,
                                max_refinements=self.max_refinements, min_gain=self.min_gain)
            refinement = verdict.state
            if verdict.action != "refine":
                return self._prediction(run, verdict.answer, history, reasoning, verdict.reason)
            history = history.append(reasoning="", code="", output=feedback_message(evaluation))
        if refinement.best_answer is not None:
            return self._prediction(run, refinement.best_answer, history, reasoning, stop_reason)
        outputs = yield from self._extract(run, history, variables[1:])
        return self._prediction(run, outputs, history, "Extract forced final output", stop_reason)

    def _extract(self, run: _Run, history: REPLHistory, variables: list[str]) -> Generator:
        """Typed outputs from the trajectory, on the call held for it (oldest history dropped to fit)."""
        held = run.take_extract_hold()
        inputs = {"variables_info": variables, "repl_history": history}
        output_bound = (max_output_tokens(self.extract, resolve_lm(self.extract.lm, "RLM's root predictors"))
                        if isinstance(self.extract, dspy.Predict) else None)  # another callable: no prompt to trim
        while output_bound is not None and held is not None and held.tokens and len(inputs["repl_history"]) and \
                prompt_tokens_bound(self.extract, inputs) + output_bound > held.tokens:
            inputs["repl_history"] = REPLHistory(entries=list(inputs["repl_history"])[1:],
                                                 max_output_chars=self.max_output_chars)
        try:
            prediction = yield _Predict(self.extract, inputs, held)
        except BudgetExceeded as exc:
            if held is not None:
                run.budget.cancel(held, dispatched=False)
            run.record_cap(exc, what="extract skipped")
            prediction = None
        if isinstance(prediction, (_Unparsed, _TooLong)):
            run.trajectory.record("note", message="extract returned nothing usable: "
                                  + (preview(prediction.message, 500) if isinstance(prediction, _Unparsed)
                                     else "its prompt was longer than the model's window"))
        return {name: getattr(prediction, name, None) for name in self.signature.output_fields}

    def _cell_output(self, result: CellResult) -> str:
        """What the root LM is shown of a cell, in ``dspy.RLM``'s words: an error after ``[Error]``."""
        parts = [result.output.rstrip("\n")] if result.output else []
        if result.error is not None:
            parts.append(f"[Error] {result.error}")
        if result.has_final:
            parts.append("FINAL was called.")
        return self._format_output("\n".join(parts))

    def _typed_outputs(self, raw: Any) -> tuple[dict[str, Any] | None, str | None]:
        fields = self.signature.output_fields
        if not isinstance(raw, dict):
            if len(fields) != 1:
                return None, f"[Error] SUBMIT needs the fields {list(fields)}, got a {type(raw).__name__}"
            raw = {next(iter(fields)): raw}
        missing = [name for name in fields if name not in raw]
        if missing:
            return None, f"[Error] missing output fields {missing}; call SUBMIT({', '.join(fields)})"
        outputs, errors = {}, []
        for name, field in fields.items():
            annotation = getattr(field, "annotation", str)
            try:
                outputs[name] = parse_value(raw[name], annotation)
            except (ValueError, TypeError, pydantic.ValidationError) as exc:
                errors.append(f"{name}: expected {getattr(annotation, '__name__', annotation)}: {exc}")
        return (None, "[Type Error] " + "; ".join(errors)) if errors else (outputs, None)

    def _prediction(self, run: _Run, outputs: dict[str, Any], history: REPLHistory, reasoning: str,
                    stop_reason: str) -> dspy.Prediction:
        run.give_back_hold()  # not needed: given back before the usage is reported
        run.record_final(outputs, stop_reason)
        return dspy.Prediction(**outputs, trajectory=[entry.model_dump() for entry in history],
                               final_reasoning=reasoning, stop_reason=stop_reason, usage=run.budget.spent(),
                               events=run.trajectory.to_dict())


class RLMSession:
    """Questions over inputs loaded once into one REPL (from :meth:`RLM.session`).

    Each question (``session(query=...)`` or :meth:`ask`) is a turn: the REPL keeps the loaded
    inputs and every variable earlier turns made, and the root LM is told of those turns by a
    short summary (:func:`sandbox.engine.turns.summary`) in ``variables_info``, never their histories.
    It returns a ``dspy.Prediction`` as :meth:`RLM.forward` does, with ``usage`` and ``events``
    of that turn; :attr:`turns` records them all. Cells run in the module's restricted sandbox
    or on its ``interpreter_factory``'s interpreter. ``close()`` (or leaving a ``with`` block)
    stops the worker.
    """

    def __init__(self, module: RLM, inputs: dict[str, Any], *, budget_scope: BudgetScope):
        self.module, self.budget_scope = module, budget_scope
        self.loaded = dict(inputs)
        self.turns: list[Turn] = []
        self._run: _Run | None = module._open_run(self.loaded, None, None, partial=True)
        self._run.end_turn()  # each question holds its own call for `extract`, and has its own spans

    def ask(self, **inputs: Any) -> dspy.Prediction:
        """Answer one question over the session's inputs.

        Args:
            **inputs: the signature's input fields the session was not opened with.

        Returns:
            A ``dspy.Prediction``, as :meth:`RLM.forward` returns it; its ``usage`` is this turn's.

        Raises:
            RuntimeError: the session is closed.
            ValueError: an input is missing, not in the signature, or was loaded when the session opened.
        """
        run = self._run
        if run is None:
            raise RuntimeError("this RLM session is closed: open another with rlm.session(**inputs)")
        again = sorted(set(inputs) & set(self.loaded))
        if again:
            raise ValueError(f"inputs {again} were loaded when the session opened; give each question only the "
                             f"others, or open a new session (rlm.session(...)) for new values")
        everything = {**self.loaded, **inputs}
        self.module._check_inputs(everything)
        trajectory = Trajectory(_describe(inputs))
        if self.module.on_event is not None:
            trajectory.subscribe(self.module.on_event)
        start = starting_usage(self.turns, scope=self.budget_scope)
        run.next_question(everything, trajectory=trajectory, usage=start, earlier=summary(self.turns))
        before = run.session.repl.variables()
        try:
            run.load(inputs)
            prediction = self.module._drive_steps(run)
        finally:
            run.end_turn()
        outputs = {name: prediction[name] for name in self.module.signature.output_fields}
        turn = Turn(query=trajectory.query, answer=_answer_of(outputs),
                    stop_reason=prediction.stop_reason, iterations=len(trajectory.of_kind("iteration")),
                    variables=made_variables([*before, *inputs], run.session.repl.variables()),
                    usage=usage_since(run.budget.spent(), start))
        self.turns.append(turn)
        prediction.usage = turn.usage
        return prediction

    __call__ = ask

    def close(self) -> None:
        """Stop the session's worker (idempotent); a later question raises ``RuntimeError``."""
        run, self._run = self._run, None
        if run is not None:
            run.close()

    def __enter__(self) -> RLMSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _root_model(module: RLM) -> str | None:
    """The root LM's model name, for the spans (a replaced predictor may have no ``.lm``)."""
    return getattr(getattr(module.generate_action, "lm", None) or dspy.settings.lm, "model", None)


def _searched_input(inputs: dict[str, Any]) -> str | None:
    """The input ``search`` ranks: ``context`` when it is text, else the longest text input."""
    texts = {name: value for name, value in inputs.items()
             if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))}
    if "context" in texts:
        return "context"
    return max(texts, key=lambda name: sum(map(len, texts[name])) if isinstance(texts[name], list)
               else len(texts[name]), default=None)


def _answer_of(outputs: dict[str, Any]) -> Any:
    """The answer an evaluator or a turn record sees: the one output's value, else all of them."""
    return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def _answer_text(outputs: dict[str, Any]) -> str:
    return "\n".join(value if isinstance(value, str) else json.dumps(value, default=str) for value in outputs.values())


def _recoverable(exc: Exception) -> _Unparsed | _TooLong:
    """A predictor failure the loop can recover from, as a step result; anything else re-raised."""
    if isinstance(exc, AdapterParseError):
        return _Unparsed(str(exc), str(exc.lm_response or ""))
    if is_context_window_error(exc):
        return _TooLong()
    raise exc


def _normalize_tools(tools: list[Callable[..., Any]] | None) -> dict[str, Tool]:
    if tools is None:
        return {}
    if isinstance(tools, dict):
        raise TypeError("tools must be a list, not a dict: change tools={'name': func} to tools=[func] (names "
                        "come from the functions, or use dspy.Tool(func, name='custom_name'))")
    normalized: dict[str, Tool] = {}
    for item in tools:
        tool = item if isinstance(item, Tool) else Tool(item) if callable(item) else None
        if tool is None:
            raise TypeError(f"Tool {item!r} must be callable (a function or a dspy.Tool), got {type(item).__name__}")
        if tool.name in normalized:
            raise ValueError(f"Duplicate tool name '{tool.name}': give one of them another name, "
                             "e.g. dspy.Tool(func, name='other_name')")
        normalized[tool.name] = tool
    return normalized


def _check_factory(factory: Any, what: str) -> None:
    """``factory`` must make interpreters, not be one (whose owner would then be unclear)."""
    if not isinstance(factory, type) and isinstance(factory, CodeInterpreter):
        raise TypeError(f"{what} got an interpreter ({type(factory).__name__}), not a factory: pass a caller-owned "
                        "interpreter as the first positional argument when calling the module, "
                        "rlm(interpreter, **inputs), or a zero-argument callable that creates one")
    if not callable(factory):
        raise TypeError(f"{what} must be a zero-argument callable that creates a CodeInterpreter, "
                        f"not {type(factory).__name__}")


def _make_interpreter(factory: InterpreterFactory) -> CodeInterpreter:
    interpreter = factory()
    if not isinstance(interpreter, CodeInterpreter):
        raise TypeError(f"interpreter_factory must return a CodeInterpreter, not {type(interpreter).__name__} "
                        "(it needs tools, start, execute and shutdown)")
    return interpreter


def _execution_instructions(interpreter: CodeInterpreter, factory: InterpreterFactory | None) -> str:
    """How the interpreter describes its runtime to the LM (its factory's ``execution_instructions``,
    as ``dspy.RLM`` reads them, else its own), after the one rule every REPL shares."""
    described = getattr(factory, "execution_instructions", None) or getattr(interpreter, "execution_instructions", "")
    if not isinstance(described, str):
        raise TypeError(f"execution_instructions of {type(interpreter).__name__} must be a str, "
                        f"got {type(described).__name__}")
    return "Variables persist between your code blocks." + (f" {described}" if described else "")


def _is_dspy_metric(fn: Any) -> bool:
    """A DSPy metric takes (example, prediction[, trace...]); sandbox evaluators take (query, answer[, ...])."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return bool(names) and names[0] in ("example", "gold", "ex") and len(names) >= 2


def _describe(inputs: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {preview(str(value), 300)}" for name, value in inputs.items())
