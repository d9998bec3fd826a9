"""The suite's own task generators: seeded, so a (task, length, seed) is always the same case, and scored exactly.

- niah: one needle sentence in filler; score 1 if the answer contains the number.
- distractors: one true needle ("The access code for the north gate is 98321."), near-miss facts of the same
  kind about other gates with near values, and a false rumour giving a near value for the asked gate;
  score 1 only if the answer has the true code and none of the distractor codes.
- oolong: labelled records; "how many records have label X?"; score 1 for the exact count.
- pairs: records with a user and a city; "which users share a city with user U?";
  score = set F1 of the user ids in the answer against the truth.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 4
FILLER = ("report quarterly revenue team meeting schedule budget review vendor contract shipment office "
          "policy travel invoice supplier warehouse forecast audit").split()
LABELS = ("billing", "shipping", "refund", "account", "outage")
CITIES = ("Lyon", "Oslo", "Quito", "Perth", "Dakar", "Hanoi", "Cusco", "Turku")
GATES = ("north", "south", "east", "west", "river", "harbour", "depot", "garden", "market", "chapel")


@dataclass(frozen=True)
class Case:
    """One benchmark question: the context to search, the truth, and how an answer is scored.

    ``distractors`` are values that look right but are wrong (the ``distractors`` task); ``scorer``
    turns ``(case, answer text)`` into a score in [0, 1].
    """

    task: str
    tokens: int
    seed: int
    question: str
    context: str
    truth: Any
    scorer: Callable[[Case, str], float] = field(repr=False, compare=False)
    distractors: tuple[int, ...] = ()

    def score(self, answer: Any) -> float:
        """The answer's score in [0, 1] (``None`` counts as an empty answer)."""
        return self.scorer(self, str(answer or ""))


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _filler(rng: random.Random) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(12)).capitalize() + "."


def _lines(tokens: int, line: Callable[[int], str], minimum: int = 1) -> list[str]:
    """``line(0)``, ``line(1)``, ... until they fill ``tokens`` tokens (and there are at least ``minimum``)."""
    lines: list[str] = []
    size = 0
    while size < tokens * CHARS_PER_TOKEN or len(lines) < minimum:
        lines.append(line(len(lines)))
        size += len(lines[-1]) + 1
    return lines


def _contains_truth(case: Case, answer: str) -> float:
    return float(case.truth in _numbers(answer))


def niah(tokens: int, seed: int) -> Case:
    """A single needle ("The launch code for project Heron is 4821.") in ``tokens`` tokens of filler."""
    rng = random.Random(seed)
    name, number = rng.choice(["Heron", "Kestrel", "Osprey", "Plover"]), rng.randint(1000, 9999)
    lines = _lines(tokens, lambda _: _filler(rng))
    lines.insert(rng.randrange(len(lines) + 1), f"The launch code for project {name} is {number}.")
    return Case("niah", tokens, seed, f"What is the launch code for project {name}?", "\n".join(lines), number,
                _contains_truth)


def near_values(value: int, rng: random.Random, count: int) -> list[int]:
    """``count`` distinct numbers that differ from ``value`` by one adjacent-digit swap or one digit off by one.

    Args:
        value: a positive integer of at least two digits.
        rng: the random source (the choice and order are seeded).
        count: how many to return.

    Returns:
        Numbers with as many digits as ``value``, none equal to it.

    Raises:
        ValueError: if ``value`` has fewer than ``count`` such neighbours.
    """
    digits = str(value)
    candidates = set()
    for i in range(len(digits) - 1):
        candidates.add(digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:])
    for i, digit in enumerate(digits):
        for step in (-1, 1):
            if 0 <= int(digit) + step <= 9:
                candidates.add(digits[:i] + str(int(digit) + step) + digits[i + 1:])
    near = sorted(int(c) for c in candidates if c[0] != "0" and c != digits)
    if len(near) < count:
        raise ValueError(f"{value} has only {len(near)} near values, {count} asked")
    rng.shuffle(near)
    return near[:count]


def _access_code_is_exact(case: Case, answer: str) -> float:
    found = set(_numbers(answer))
    return float(case.truth in found and not found & set(case.distractors))


def distractors(tokens: int, seed: int, near_misses: int = 4) -> Case:
    """The true access code of one gate among near-miss codes of other gates and a false rumour.

    Args:
        tokens: the context length in tokens (about ``CHARS_PER_TOKEN`` characters each).
        seed: the case's seed.
        near_misses: how many other gates get a code near the true one (at most ``len(GATES) - 1``).

    Returns:
        A case whose truth is the code and whose ``distractors`` are the near-miss and rumour codes.
    """
    rng = random.Random(seed)
    gate, *others = rng.sample(GATES, near_misses + 1)
    code = rng.randint(10000, 99999)
    *wrong, rumour = near_values(code, rng, near_misses + 1)
    facts = [f"The access code for the {gate} gate is {code}.",
             f"Some staff believed the {gate} gate code was {rumour}, but that was an old code."]
    facts += [f"The access code for the {other} gate is {value}." for other, value in zip(others, wrong)]
    lines = _lines(tokens, lambda _: _filler(rng))
    for fact in facts:
        lines.insert(rng.randrange(len(lines) + 1), fact)
    return Case("distractors", tokens, seed, f"What is the access code for the {gate} gate?", "\n".join(lines),
                code, _access_code_is_exact, (*wrong, rumour))


def _exact_count(case: Case, answer: str) -> float:
    numbers = _numbers(answer)
    return float(bool(numbers) and numbers[0] == case.truth)


def oolong(tokens: int, seed: int) -> Case:
    """Labelled records; the truth is how many have the asked label."""
    rng = random.Random(seed)
    label = rng.choice(LABELS)
    records = _lines(tokens, lambda i: f"Record {i}: label: {rng.choice(LABELS)} | note: {_filler(rng)}")
    count = sum(f"label: {label} |" in record for record in records)
    return Case("oolong", tokens, seed, f"How many records have the label {label}? Answer with a number.",
                "\n".join(records), count, _exact_count)


def _set_f1(case: Case, answer: str) -> float:
    found = set(_numbers(answer)) - {int(re.search(r"user (\d+)", case.question).group(1))}
    truth = set(case.truth)
    if not found or not truth:
        return float(found == truth)
    hits = len(found & truth)
    precision, recall = hits / len(found), hits / len(truth)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def pairs(tokens: int, seed: int) -> Case:
    """Users with cities; the truth is the users who share the asked user's city."""
    rng = random.Random(seed)
    users: dict[int, str] = {}

    def record(i: int) -> str:
        users[100 + i] = rng.choice(CITIES)
        return f"User {100 + i} lives in {users[100 + i]}. {_filler(rng)}"

    records = _lines(tokens, record, minimum=8)
    target = rng.choice(list(users))
    truth = sorted(u for u, city in users.items() if city == users[target] and u != target)
    return Case("pairs", tokens, seed, f"Which users live in the same city as user {target}? List their numbers.",
                "\n".join(records), truth, _set_f1)


TASKS: dict[str, Callable[[int, int], Case]] = {"niah": niah, "distractors": distractors, "oolong": oolong,
                                                "pairs": pairs}
