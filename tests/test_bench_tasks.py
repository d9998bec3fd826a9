"""The long-context benchmark's task generators, their scoring and the per-cell summary.

The RULER tests need the ``bench`` extra (``pip install -e '.[bench]'``); ``.ci/test`` installs it.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from sandbox.app.bench import ruler_tasks, tasks
from sandbox.app.bench import suite as long_context
from sandbox.app.bench.results import Run, markdown_table, summarize, write

OWN_TASKS = sorted(tasks.TASKS)
needs_bench_extra = pytest.mark.skipif(bool(ruler_tasks.missing()),
                                       reason=f"RULER tasks need the bench extra: {ruler_tasks.INSTALL_HINT} "
                                              f"(missing: {', '.join(ruler_tasks.missing())})")


@pytest.mark.parametrize("name", OWN_TASKS)
def test_own_tasks_are_the_same_case_for_a_seed_and_differ_across_seeds(name):
    generate = tasks.TASKS[name]
    assert generate(4000, 7) == generate(4000, 7)
    assert generate(4000, 7).context != generate(4000, 8).context


@pytest.mark.parametrize("name", OWN_TASKS)
@pytest.mark.parametrize("tokens", [4000, 16000])
def test_own_tasks_fill_the_requested_length(name, tokens):
    chars = len(tasks.TASKS[name](tokens, 0).context)
    assert 0.9 <= chars / (tokens * tasks.CHARS_PER_TOKEN) <= 1.3


def _is_near(a: int, b: int) -> bool:
    x, y = str(a), str(b)
    diff = [i for i in range(len(x)) if x[i] != y[i]]
    swap = len(diff) == 2 and diff[1] == diff[0] + 1 and x[diff[0]] == y[diff[1]] and x[diff[1]] == y[diff[0]]
    one_off = len(diff) == 1 and abs(int(x[diff[0]]) - int(y[diff[0]])) == 1
    return len(x) == len(y) and (swap or one_off)


@pytest.mark.parametrize("seed", range(5))
def test_distractors_hold_one_needle_near_misses_about_other_gates_and_a_rumour(seed):
    case = tasks.distractors(8000, seed)
    gate = re.fullmatch(r"What is the access code for the (\w+) gate\?", case.question).group(1)
    *near_misses, rumour = case.distractors
    assert case.context.count(f"The access code for the {gate} gate is {case.truth}.") == 1
    assert case.context.count(f"Some staff believed the {gate} gate code was {rumour}, but that was an old code.") == 1
    others = dict(re.findall(r"The access code for the (\w+) gate is (\d+)\.", case.context))
    assert others.pop(gate) == str(case.truth)
    assert sorted(int(v) for v in others.values()) == sorted(near_misses) and len(near_misses) == 4
    assert len(set(case.distractors)) == 5 and case.truth not in case.distractors
    assert all(_is_near(case.truth, value) for value in case.distractors)


def test_distractors_score_only_the_true_code_alone():
    case = tasks.distractors(4000, 1)
    near_miss, rumour = case.distractors[0], case.distractors[-1]
    assert case.score(f"The code is {case.truth}.") == 1.0
    assert case.score(f"{case.truth} (earlier it was {rumour})") == 0.0
    assert case.score(f"{case.truth} or {near_miss}") == 0.0
    assert case.score(str(rumour)) == 0.0
    assert case.score(None) == 0.0


def test_near_values_refuses_a_number_with_too_few_neighbours():
    assert len(tasks.near_values(98321, random.Random(0), 5)) == 5
    with pytest.raises(ValueError, match="near values"):
        tasks.near_values(10, random.Random(0), 5)


def test_the_older_tasks_keep_their_scoring():
    niah, oolong, pairs = tasks.niah(2000, 0), tasks.oolong(2000, 0), tasks.pairs(2000, 0)
    assert niah.score(f"It is {niah.truth}.") == 1.0 and niah.score("no idea") == 0.0
    assert oolong.score(f"{oolong.truth} records") == 1.0 and oolong.score(f"{oolong.truth + 1}") == 0.0
    half = pairs.truth[: len(pairs.truth) // 2]
    assert pairs.score(" ".join(map(str, pairs.truth))) == 1.0
    assert 0.0 < pairs.score(" ".join(map(str, half))) < 1.0


def test_missing_bench_extra_names_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(ruler_tasks.REQUIRED, "no_such_module_for_rlm_tests", "no-such-dist")
    with pytest.raises(ruler_tasks.BenchExtraMissing, match=r"no-such-dist.*pip install -e '\.\[bench\]'"):
        ruler_tasks.generate("ruler_vt", 4096, 0)
    with pytest.raises(SystemExit) as exit_info:
        long_context.main(["--tasks", "distractors,ruler_vt", "--lengths", "1000", "--model", "openai/none"])
    assert exit_info.value.code == 2
    assert "pip install -e '.[bench]'" in capsys.readouterr().err


def test_unknown_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        long_context.main(["--tasks", "haystack", "--model", "openai/none"])
    assert "unknown task(s) haystack" in capsys.readouterr().err


def test_ruler_lengths_below_the_minimum_are_refused():
    with pytest.raises(ValueError, match=f"at least {ruler_tasks.MIN_TOKENS} tokens, not 200"):
        ruler_tasks.generate("ruler_niah_multikey", 200, 0)


@needs_bench_extra
def test_bench_turns_a_too_short_ruler_length_into_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        long_context.main(["--tasks", "ruler_vt", "--lengths", "200", "--model", "openai/none"])
    assert exit_info.value.code == 2 and "at least" in capsys.readouterr().err


@needs_bench_extra
@pytest.mark.parametrize("name", sorted(ruler_tasks.TASKS))
def test_ruler_cases_are_the_same_for_a_seed_and_differ_across_seeds(name):
    case = ruler_tasks.generate(name, 4096, 3)
    assert case == ruler_tasks.generate(name, 4096, 3)
    assert case.truth != ruler_tasks.generate(name, 4096, 4).truth


@needs_bench_extra
@pytest.mark.parametrize("name", sorted(ruler_tasks.TASKS))
@pytest.mark.parametrize("tokens", [4096, 16384])
def test_ruler_prompts_fit_the_length_in_cl100k_tokens(name, tokens):
    import tiktoken

    case = ruler_tasks.generate(name, tokens, 0)
    counted = len(tiktoken.get_encoding(ruler_tasks.TOKENIZER).encode(case.question + case.context))
    assert 0.75 * tokens <= counted <= tokens


@needs_bench_extra
@pytest.mark.parametrize(("name", "needles"), [("ruler_niah_single", 1), ("ruler_niah_multikey", 4)])
def test_ruler_niah_hides_the_asked_needle_among_the_others(name, needles):
    case = ruler_tasks.generate(name, 8192, 0)
    key = re.search(r"special magic number for (\S+) mentioned", case.question).group(1)
    (value,) = case.truth
    assert f"One of the special magic numbers for {key} is: {value}." in case.context
    assert len(re.findall(r"One of the special magic numbers for \S+ is: \d+\.", case.context)) == needles


@needs_bench_extra
def test_ruler_vt_chains_the_value_through_every_expected_variable():
    case = ruler_tasks.generate("ruler_vt", 8192, 0)
    value = re.search(r"assigned the value (\d+)", case.question).group(1)
    first, *rest = case.truth
    assert f"VAR {first} = {value}" in case.context
    assert all(f"VAR {later} = VAR {earlier}" in case.context for earlier, later in zip(case.truth, rest))
    assert len(case.truth) == 5


@needs_bench_extra
def test_ruler_answers_are_scored_by_string_match_all():
    vt = ruler_tasks.generate("ruler_vt", 4096, 1)
    niah = ruler_tasks.generate("ruler_niah_single", 4096, 1)
    assert vt.score(", ".join(vt.truth).lower()) == 1.0
    assert vt.score(" ".join(vt.truth[:2])) == pytest.approx(0.4)
    assert niah.score(f"The number is {niah.truth[0]}.") == 1.0 and niah.score("1234567") == 0.0


def _run(engine: str, seed: int, score: float, seconds: float) -> Run:
    return Run("distractors", 16384, seed, engine, score, "", "final", 3, 1, 1000 + seed, seconds, None)


def test_summary_reports_accuracy_spread_and_median_seconds(tmp_path):
    runs = [_run("graph", 0, 0.0, 10.0), _run("graph", 1, 1.0, 30.0), _run("graph", 2, 1.0, 11.0),
            _run("direct", 0, 0.0, 5.0)]
    graph, direct = summarize(runs)
    assert (graph["engine"], direct["engine"]) == ("graph", "direct")
    assert graph["runs"] == 3 and graph["accuracy"] == pytest.approx(0.667)
    assert (graph["accuracy_min"], graph["accuracy_max"], graph["accuracy_stdev"]) == (0.0, 1.0, 0.577)
    assert graph["median_seconds"] == 11.0 and graph["tokens_used"] == 1001
    assert direct["accuracy_stdev"] == 0.0
    assert "| distractors | 16K | graph | 3 | 0.67 (0.00–1.00, sd 0.58) | 11.0 |" in markdown_table([graph])
    write(tmp_path, runs, [graph, direct])
    assert json.loads((tmp_path / "long_context.json").read_text())["distractors/16384/graph"]["runs"] == 3
    assert (tmp_path / "long_context.svg").read_text().startswith("<svg")


@pytest.mark.parametrize("engine", ["graph", "dspy"])
def test_a_bench_run_reads_each_engines_result(engine):
    """The suite's runners read what the adapters return (answer, stop reason, the event tree)."""
    from sandbox.app.bench.suite import run_dspy, run_graph
    from sandbox.app.bench.tasks import niah
    from sandbox.app.cli import Endpoint
    from tests.scripted_openai import ScriptedOpenAI

    case = niah(1_024, seed=1)
    code = "i = context.find('launch code')\nprint(context[i:i + 60])"
    # The scripted server tells root turns apart by the chat's assistant turns, which DSPy's
    # prompt has none of: its one reply reads the context and answers in the same cell.
    replies = ([f"```repl\n{code}\n```", f"```repl\nFINAL({case.truth})\n```"] if engine == "graph" else
               [f"[[ ## reasoning ## ]]\nlook\n\n[[ ## code ## ]]\n```python\n{code}\nSUBMIT(answer='{case.truth}')\n"
                "```\n\n[[ ## completed ## ]]"])
    with ScriptedOpenAI(replies) as server:
        endpoint = Endpoint("openai/scripted", "openai/scripted", server.api_base, "k")
        run = (run_graph if engine == "graph" else run_dspy)(case, endpoint, 4)
    assert (run.score, run.stop_reason, run.llm_calls) == (1.0, "final", len(replies))
