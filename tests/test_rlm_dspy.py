"""rlm_dspy.RLM: dspy.RLM's call shape plus budgets, recursion, evaluators and robustness."""

from __future__ import annotations

import asyncio
import copy
import json

import dspy
import pytest

from rlm_dspy import RLM
from sandbox import Budget, Evaluation
from tests.dspy_lms import fields, function_lm, script_lm, text_lm
from tests.openai_stub import OpenAIStub
from tests.scripted_openai import fallback_router


def step(code: str, reasoning: str = "next") -> dict[str, str]:
    return {"reasoning": reasoning, "code": f"```python\n{code}\n```"}


def run(rlm: RLM, root: dspy.LM, **inputs):
    with dspy.context(lm=root):
        return rlm(**inputs)


def test_typed_outputs_trajectory_and_usage():
    root = script_lm(step("words = context.split()\nprint(len(words))", "count first"),
                     step("SUBMIT(answer=llm_query(words[0]), count=len(words))", "done"))
    rlm = RLM("context, query -> answer: str, count: int", sub_lm=text_lm(str.upper))
    out = run(rlm, root, context="alpha beta gamma", query="shout the first word")
    assert (out.answer, out.count) == ("ALPHA", 3) and out.stop_reason == "final"
    assert out.final_reasoning == "done"
    assert [e["output"] for e in out.trajectory] == ["3", "FINAL: {'answer': 'ALPHA', 'count': 3}"]
    assert out.usage["llm_calls"] == 3 and out.usage["tokens"] > 0
    assert [e["kind"] for e in out.events["events"]].count("sub_call") == 1
    root_calls = [e for e in out.events["events"] if e["kind"] == "lm_call"]
    assert len(root_calls) == 2 and all(e["prompt_tokens"] > 0 and e["completion_tokens"] > 0 for e in root_calls)
    json.dumps(out.events)


def test_rewritten_instructions_cannot_erase_the_repl_guide():
    root = script_lm(step("SUBMIT('x')"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper))
    rlm.generate_action.signature = rlm.generate_action.signature.with_instructions("Solve it.")  # as COPRO/GEPA do
    assert run(rlm, root, context="c").answer == "x"
    prompt = root.scripted.prompts[0]
    assert "llm_query_batched(prompts)" in prompt and "Finish with SUBMIT(answer)" in prompt
    assert "Allowed imports" in prompt


@pytest.mark.parametrize("bad_step,expected", [
    ({"reasoning": "r", "code": ""}, "was empty"),
    ({"reasoning": "r", "code": "```json\n{\"a\": 1}\n```"}, "tagged json"),
    ({"reasoning": "r", "code": "FINAL: the answer is 42"}, "SyntaxError"),
])
def test_bad_actions_become_feedback(bad_step, expected):
    root = script_lm(bad_step, step("SUBMIT(answer='recovered')"))
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper)), root, context="c")
    assert out.answer == "recovered" and expected in out.trajectory[0]["output"]


def test_an_unparseable_reply_becomes_feedback():
    # two unparseable replies: DSPy's ChatAdapter retries once through its JSON fallback
    replies = iter(["no fields at all, just chatter"] * 2 + [fields(reasoning="ok", code="SUBMIT(answer='fine')")])
    root = function_lm(lambda messages: next(replies))
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper)), root, context="c")
    assert out.answer == "fine" and "output format" in out.trajectory[0]["output"]


def test_a_reply_without_field_markers_still_runs_its_code_block():
    # what small local models write; DSPy's ChatAdapter tries its JSON fallback once first
    replies = iter(["Let me look.\n```python\nprint(len(context))\n```\nThen I answer."] * 2
                   + [fields(reasoning="ok", code="SUBMIT(answer='fine')")])
    root = function_lm(lambda messages: next(replies))
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper)), root, context="abc")
    assert out.answer == "fine" and out.trajectory[0]["code"] == "print(len(context))"
    assert out.trajectory[0]["output"] == "3"
    assert any("ignored the field format" in e.get("message", "") for e in out.events["events"])


def test_final_in_place_of_submit_is_accepted_for_one_output():
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper)), script_lm(step("FINAL('via final')")), context="c")
    assert out.answer == "via final"


def test_type_errors_go_back_to_the_model():
    root = script_lm(step("SUBMIT(count='many')"), step("SUBMIT(count=7)"))
    out = run(RLM("context -> count: int", sub_lm=text_lm(str.upper)), root, context="c")
    assert out.count == 7 and "[Type Error]" in out.trajectory[0]["output"]


def looping_lm(code: str, extracted: dict[str, str]) -> dspy.LM:
    """A root LM that runs ``code`` every iteration and answers ``extract`` with ``extracted``."""

    def reply(messages):
        if "extract the final outputs" in messages[0][1]:
            return fields(**extracted)
        return fields(reasoning="still looking", code=code)

    return function_lm(reply)


def test_max_iters_ends_with_extract():
    out = run(RLM("context -> answer: str, count: int", max_iters=2, sub_lm=text_lm(str.upper)),
              looping_lm("x = 1", {"answer": "extracted", "count": "5"}), context="c")
    assert (out.answer, out.count, out.stop_reason) == ("extracted", 5, "max_iterations")


def test_budget_exhaustion_still_extracts_within_the_cap():
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper), budget=Budget(max_llm_calls=4)),
              looping_lm("print(llm_query('x'))", {"answer": "partial"}), context="c")
    assert out.answer == "partial" and out.stop_reason == "max_llm_calls"
    assert out.usage["llm_calls"] == 4


def test_token_budget_trims_history_for_extract():
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper), budget=Budget(max_tokens=40_000)),
              looping_lm("print('y' * 2000)", {"answer": "trimmed"}), context="c")
    assert out.answer == "trimmed" and out.stop_reason == "max_tokens" and out.usage["tokens"] <= 40_000


def test_sub_call_cap_is_dspy_max_llm_calls():
    root = script_lm(step("for i in range(10):\n    llm_query(str(i))"), step("SUBMIT(answer='x')"))
    extract_lm = function_lm(lambda messages: fields(answer="capped"))
    rlm = RLM("context -> answer", max_llm_calls=3, sub_lm=text_lm(str.upper))
    rlm.extract.lm = extract_lm
    out = run(rlm, root, context="c")
    assert out.stop_reason == "max_sub_calls" and out.answer == "capped"  # not the budget's max_llm_calls
    assert sum(e["kind"] == "sub_call" for e in out.events["events"]) == 3
    budget_events = [e for e in out.events["events"] if e["kind"] == "budget"]
    assert budget_events and all(e["limit"] == "max_sub_calls" for e in budget_events)
    assert "this RLM's 3 sub-calls are used" in budget_events[0]["message"]


def test_rlm_query_runs_a_child_rlm_one_level_deeper():
    def reply(messages):
        prompt = messages[-1][1]
        if "CHILD CONTEXT" in prompt:  # the parent, after the child answered
            return fields(reasoning="parent", code="SUBMIT(answer='parent saw ' + sub)")
        if "sub question" in prompt and "rlm_query(" not in prompt:  # the child, on its own query
            return fields(reasoning="child", code="SUBMIT(answer=context.upper())")
        return fields(reasoning="delegate", code="sub = rlm_query('sub question', 'child context')\nprint(sub)")

    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper), max_depth=1), function_lm(reply), context="c")
    assert out.answer == "parent saw CHILD CONTEXT"
    events = out.events
    assert events["children"][0]["depth"] == 1
    assert [e for e in events["events"] if e["kind"] == "rlm_query"][0]["degraded"] is False


def test_rlm_query_at_max_depth_degrades():
    root = script_lm(step("SUBMIT(answer=rlm_query('hello'))"))
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper), max_depth=0), root, context="c")
    assert out.answer == "HELLO"


def test_evaluator_refines_until_accepted():
    seen = []

    def evaluator(query, answer):
        seen.append(answer)
        return Evaluation(1.0, True) if answer == "complete" else Evaluation(0.2, False, "add the year")

    root = script_lm(step("SUBMIT(answer='partial')"), step("SUBMIT(answer='complete')"))
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper), evaluator=evaluator), root, context="c")
    assert out.answer == "complete" and out.stop_reason == "accepted" and seen == ["partial", "complete"]
    assert any("add the year" in e["output"] for e in out.trajectory)


def test_dspy_metric_style_evaluator_with_feedback_and_best_answer():
    def metric(example, pred, trace=None):
        score = {"a": 0.6, "b": 0.4}[pred.answer]
        return dspy.Prediction(score=score, feedback=f"{example.context} needs more")

    root = script_lm(step("SUBMIT(answer='a')"), step("SUBMIT(answer='b')"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper), evaluator=metric, min_gain=0.05)
    out = run(rlm, root, context="ctx")
    assert out.answer == "a" and out.stop_reason == "no_improvement"
    assert "ctx needs more" in out.trajectory[1]["output"]


def test_aforward():
    root = script_lm(step("SUBMIT(answer=llm_query('async'))"))
    rlm = RLM("context -> answer", sub_lm=text_lm(str.upper))

    async def main():
        with dspy.context(lm=root):
            return await rlm.acall(context="c")

    out = asyncio.run(main())
    assert out.answer == "ASYNC" and out.stop_reason == "final"


@pytest.mark.parametrize("signature,match", [
    ("llm_query -> answer", "conflict with built-in sandbox functions"),
    ("SUBMIT -> answer", "conflict with built-in sandbox functions"),
    ("context -> trajectory", "metadata"),
])
def test_reserved_names_are_refused(signature, match):
    with pytest.raises(ValueError, match=match):
        RLM(signature)


def test_bad_inputs_fail_before_any_call():
    root = script_lm(step("SUBMIT(answer='x')"))
    rlm = RLM("context, query -> answer", sub_lm=text_lm(str.upper))
    with dspy.context(lm=root):
        with pytest.raises(TypeError, match="input 'context' is a object"):
            rlm(context=object(), query="q")
        with pytest.raises(ValueError, match="Missing required inputs"):
            rlm(context="c")
    with pytest.raises(dspy.LMNotConfiguredError, match="No LM"):
        RLM("context -> answer")(context="c")
    assert root.scripted.prompts == []


def test_module_is_deep_copyable_and_keeps_predictor_names():
    from sandbox import LMJudge

    rlm = RLM("context -> answer", budget=Budget(max_llm_calls=9), evaluator=LMJudge("openai/gpt-4o-mini"))
    clone = copy.deepcopy(rlm)
    assert [name for name, _ in clone.named_predictors()] == ["generate_action", "extract"]
    assert clone.budget_limits["max_llm_calls"] == 9


def test_save_and_load_between_dspy_rlm_and_ours(tmp_path):
    theirs = dspy.RLM("context, query -> answer", max_iters=3)
    theirs.generate_action.signature = theirs.generate_action.signature.with_instructions("TUNED BY AN OPTIMIZER")
    theirs.generate_action.demos = [dspy.Example(reasoning="r", code="print(1)")]
    theirs.save(tmp_path / "theirs.json")
    ours = RLM("context, query -> answer", max_iters=3)
    ours.load(tmp_path / "theirs.json")
    assert ours.generate_action.signature.instructions == "TUNED BY AN OPTIMIZER"
    assert ours.generate_action.demos[0]["code"] == "print(1)"
    assert list(ours.generate_action.signature.fields) == list(theirs.generate_action.signature.fields)

    ours.save(tmp_path / "ours.json")
    back = dspy.RLM("context, query -> answer", max_iters=3)
    back.load(tmp_path / "ours.json")
    assert back.generate_action.signature.instructions == "TUNED BY AN OPTIMIZER"


def test_verbose_logs_each_iteration(caplog):
    import logging

    root = script_lm(step("print('seen')"), step("SUBMIT(answer='x')"))
    with caplog.at_level(logging.INFO, logger="rlm_dspy.rlm"):
        run(RLM("context -> answer", sub_lm=text_lm(str.upper), verbose=True), root, context="c")
    assert "RLM iteration 1/20" in caplog.text and "seen" in caplog.text


def test_wall_clock_cuts_a_pending_root_call():
    import time

    def slow(messages):
        time.sleep(3)
        return fields(reasoning="late", code="SUBMIT(answer='late')")

    started = time.monotonic()
    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper), budget=Budget(max_seconds=0.5)),
              function_lm(slow), context="c")
    assert out.stop_reason == "max_seconds" and time.monotonic() - started < 2.5


def test_an_overlong_history_is_compacted_into_a_summary_and_goes_on():
    from dspy.utils.exceptions import ContextWindowExceededError

    from sandbox.engine.compaction import COMPACT_SYSTEM_PROMPT

    histories = []

    def reply(messages):
        if messages[0][1] == COMPACT_SYSTEM_PROMPT:
            return "x was set to 1, then 2."
        steps = messages[-1][1].count("=== Step ")
        histories.append(messages[-1][1])
        if steps >= 3:
            raise ContextWindowExceededError(model="scripted", message="maximum context length is 8192 tokens")
        done = "x was set to 1, then 2." in messages[-1][1]
        return fields(reasoning="go", code="SUBMIT(answer='done')" if done and steps == 2 else "x = 1")

    out = run(RLM("context -> answer", sub_lm=text_lm(str.upper)), function_lm(reply), context="c")
    assert out.answer == "done" and out.stop_reason == "final"
    [event] = [e for e in out.events["events"] if e["kind"] == "compaction"]
    assert event["steps"] == 2 and event["summary"] == "x was set to 1, then 2."
    assert "(My earlier steps, compacted" in histories[-1] and histories[-1].count("=== Step ") == 2
    assert out.usage["llm_calls"] == len(histories) + 1  # every root call, and the summary


# -- the root's reply length ------------------------------------------------------------------------

ROOT_REPLY = ("[[ ## reasoning ## ]]\nlook\n\n[[ ## code ## ]]\n```python\nprint(len(context))\nSUBMIT(answer='ok')\n"
              "```\n\n[[ ## completed ## ]]")


@pytest.mark.parametrize("engine", ["auto", "litellm"])
@pytest.mark.parametrize(("lm_max_tokens", "sent"), [(None, 2048), (300, 300)])
def test_a_root_lm_without_a_reply_bound_gets_one(engine, lm_max_tokens, sent):
    """Without one, a local server writes until its window is full (minutes, for one call)."""
    with OpenAIStub() as stub:
        stub.responses = [(200, {**OpenAIStub.completion({"model": "m", "messages": [{"content": ""}]}),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": ROOT_REPLY}}]})] * 2
        lm = dspy.LM("openai/stub", api_base=stub.api_base, api_key="k", cache=False, engine=engine,
                     max_tokens=lm_max_tokens)
        out = run(RLM("context, question -> answer", grounding=False), lm, context="abc", question="q")
        body = stub.requests[0]["body"]
    assert out.answer == "ok"
    assert (body.get("max_tokens") or body.get("max_completion_tokens")) == sent


# -- a litellm Router and the sub-call cache ------------------------------------------------------


def test_a_router_serves_the_root_and_the_sub_calls_through_its_fallback():
    import litellm

    from rlm_dspy.lm import router_lm

    with OpenAIStub() as good:
        good.responses = [(200, {**OpenAIStub.completion({"model": "b", "messages": [{"content": ""}]}),
                                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                     "role": "assistant", "content": ROOT_REPLY.replace(
                                         "SUBMIT(answer='ok')", "SUBMIT(answer=llm_query('ping'))")}}]})]
        router = fallback_router(good.api_base)
        lm = router_lm(router, "primary")
        out = run(RLM("context, question -> answer", sub_lm=lm, grounding=False), lm, context="abc", question="q")
        models = [r["body"]["model"] for r in good.requests]
    assert out.answer == "echo: ping" and out.stop_reason == "final"
    assert models == ["b", "b"]  # the root call and the sub-call, both answered by the fallback
    assert out.usage["llm_calls"] == 2 and out.usage["tokens"] > 0
    single = litellm.Router(model_list=[{"model_name": "g", "litellm_params": {"model": "openai/gpt-4o-mini"}}])
    assert isinstance(RLM("q -> a", sub_lm=single).sub_lm, dspy.LM)  # a one-group Router is a sub_lm as it is


def test_the_sub_call_cache_answers_a_repeated_prompt_uncharged_across_runs():
    from langgraph.store.memory import InMemoryStore

    from sandbox.engine.subcall_cache import SubCallCache

    sub = text_lm(str.upper)
    rlm = RLM("context -> answer", sub_lm=sub, grounding=False, sub_call_cache=SubCallCache(InMemoryStore()))
    assert copy.deepcopy(rlm).sub_call_cache is rlm.sub_call_cache  # optimizers' copies share it
    outs = [run(rlm, script_lm(step("SUBMIT(llm_query('same prompt'))")), context="c") for _ in range(2)]
    assert [o.answer for o in outs] == ["SAME PROMPT"] * 2
    assert len(sub.scripted.prompts) == 1  # the second run was answered from the store
    cached = [bool(e.get("cached")) for o in outs for e in o.events["events"] if e["kind"] == "sub_call"]
    assert cached == [False, True]
    assert outs[1].usage["llm_calls"] == outs[0].usage["llm_calls"] - 1


def test_a_root_call_formats_its_prompt_once_and_reserves_the_prompt_it_sends(monkeypatch):
    from sandbox.lm.clients import ROOT_MAX_TOKENS, estimate_prompt_tokens

    formats, reserved, sent = [], [], []

    class CountingAdapter(dspy.ChatAdapter):
        def format(self, signature, demos, inputs):
            formats.append(signature)
            return super().format(signature, demos, inputs)

    reserve_call = Budget.reserve_call
    monkeypatch.setattr(Budget, "reserve_call",
                        lambda self, **kw: reserved.append(kw["tokens"]) or reserve_call(self, **kw))
    replies = [fields(**step("x = len(context)")), fields(**step("SUBMIT(answer=str(x))"))]
    root = function_lm(lambda messages: sent.append(messages) or replies[len(sent) - 1])
    with dspy.context(lm=root, adapter=CountingAdapter()):
        out = RLM("context -> answer")(context="abc")
    assert out.answer == "3" and len(sent) == 2
    assert len(formats) == 2  # once per root call: the call sends the messages its reservation counted
    bounds = [estimate_prompt_tokens([{"content": text} for _, text in messages]) for messages in sent]
    assert [tokens - ROOT_MAX_TOKENS for tokens in reserved if tokens] == bounds


def test_each_cell_event_names_the_iteration_it_ran_in():
    root = script_lm(step("x = 1"), {"reasoning": "no code this time", "code": ""}, step("SUBMIT(answer=str(x))"))
    out = run(RLM("context -> answer"), root, context="abc")
    assert out.answer == "1" and out.usage["iterations"] == 3
    assert [e["iteration"] for e in out.events["events"] if e["kind"] == "cell"] == [1, 3]
