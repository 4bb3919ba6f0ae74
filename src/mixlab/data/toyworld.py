"""Toyworld: an embedded synthetic world, generated in code, that a ~1M-parameter model can learn.

Four domains, each small, regular and short so a byte-level model trained for minutes on a CPU
learns it measurably, and different enough that fine-tuning on one shifts the model away from
the others (forgetting is measurable):

* ``arithmetic`` — sums, differences, products and one- or two-step word problems.
* ``people``     — facts about a fixed invented population (towns, jobs, pets, ages, friends).
  A person's surname fixes the town (families live together), so some facts can be inferred.
* ``code``       — tiny Python functions with assert tests.
* ``prose``      — short stories with fixed common-sense associations (a cow eats grass, on a
  rainy day one takes an umbrella) and reading-comprehension questions about the story.

Each domain gives pretraining text (:func:`documents`), question/answer records with verifiable
answers (:func:`records`) and evaluation items: multiple choice (:func:`mc_items`) and
bits-per-byte items (:func:`bpb_items`: a prompt and its gold continuation).

**Format.** Every question is shown to a model as ``PROMPT_TEMPLATE.format(question=...)``
(``"Q: ...\\nA: "``) followed by the completion — ``Record.completion`` for QA, each choice for
multiple choice. Pretraining documents contain QA lines in exactly that form (train side only),
so fine-tuning and evaluation see the format the base model was pretrained on.

**Difficulty tiers.** Every item carries ``metadata['tier']`` (1 easy .. 3 hard): single-digit sums
vs two-digit sums and two-step word problems; famous people (often mentioned in documents) vs
rare ones and two-hop questions; one-operator functions vs loops; one-character vs three-character
stories. Learning curves are therefore graded rather than all-or-nothing.

**No leakage.** Every item has a *key* naming what is being asked, independent of phrasing: the
canonical expression (``3+4`` and ``4+3`` share the key ``add:3,4``), the (person, attribute) fact,
the function spec, or the question text. :func:`is_eval_key` hashes ``(seed, domain, key)`` and puts
one key in six on the evaluation side. Train documents and ``records(split="train")`` draw only
train-side keys; held-out documents, ``records(split="test")``, :func:`mc_items` and
:func:`bpb_items` draw only eval-side keys. Whole biographies and stories are keyed by their text.
The *world* itself (who lives where, what a cow eats) is shared by design — as Wikipedia states the
facts TriviaQA asks about: a test question about a person is never asked in training, but the
biography that states the fact is pretraining text.

Everything is a pure function of ``seed``: the same seed gives identical outputs; ``seed`` also
builds the world, so different seeds give different people and a different partition. The first
``n`` documents/records of a call are a prefix of those for a larger ``n``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mixlab.data.records import Record, make_id
from mixlab.errors import ConfigError

DOMAINS: tuple[str, ...] = ("arithmetic", "people", "code", "prose")
PROMPT_TEMPLATE = "Q: {question}\nA: "
EVAL_MODULUS = 6  # one key in six is on the evaluation side (train:eval = 5:1, like the data stage)
DOC_SPLITS = ("train", "heldout")
RECORD_SPLITS = ("train", "test")
N_CHOICES = 4


def format_prompt(question: str) -> str:
    """The exact text a model sees before an answer; documents use the same form."""
    return PROMPT_TEMPLATE.format(question=question)


def format_example(record: Record) -> str:
    """Prompt plus worked completion: one SFT example, as it also appears in pretraining text."""
    return format_prompt(record.question) + record.completion


def is_eval_key(domain: str, key: str, seed: int = 0) -> bool:
    """Whether an item key is on the evaluation side: ``blake2b(seed|domain|key) % 6 == 0``.

    A hash rather than a sample so the partition needs no state, never moves when more items are
    drawn, and can be checked by anyone holding only the key.
    """
    digest = hashlib.blake2b(f"{seed}|{domain}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % EVAL_MODULUS == 0


# ------------------------------------------------------------------------------------------ the world

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "n", "l", "r", "s")
_TOWN_SUFFIXES = ("Bay", "Hill", "Ford", "Vale", "Port", "Glen", "Cove", "Moor")
JOBS = ("baker", "farmer", "teacher", "doctor", "painter", "sailor", "miner", "singer", "tailor", "potter")
PETS = ("cat", "dog", "owl", "goat", "parrot", "rabbit", "turtle", "horse", "snake", "frog")
N_PEOPLE, N_FAMILIES = 64, 16


@dataclass(frozen=True)
class Person:
    """One invented person. ``rank`` orders fame: rank 0 is mentioned most often in documents."""

    first: str
    last: str
    town: str
    job: str
    pet: str
    age: int
    friend: int  # index into World.people
    rank: int

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def tier(self) -> int:
        """1 for the 16 most-mentioned people, 2 for the next 24, 3 for the rarely mentioned rest."""
        return 1 if self.rank < 16 else 2 if self.rank < 40 else 3


@dataclass(frozen=True)
class World:
    """The invented population shared by every document and question of one seed."""

    seed: int
    people: tuple[Person, ...]
    towns: tuple[str, ...]

    def weights(self) -> list[float]:
        """How often each person is drawn for a document: Zipf-like in fame rank (1/(rank+4))."""
        return [1.0 / (p.rank + 4) for p in self.people]


def _word(rng: random.Random, syllables: int) -> str:
    return ("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)).capitalize()


def _unique_words(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, syllables)
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


@lru_cache(maxsize=16)
def build_world(seed: int = 0) -> World:
    """The world of ``seed``: 64 people in 16 families; each family lives in one of 8 towns."""
    rng = random.Random(f"toyworld-world|{seed}")
    taken: set[str] = set()
    towns = tuple(f"{w} {s}" for w, s in zip(_unique_words(rng, 8, 2, taken), rng.sample(_TOWN_SUFFIXES, 8)))
    surnames = _unique_words(rng, N_FAMILIES, 2, taken)
    firsts = _unique_words(rng, N_PEOPLE, 2, taken)
    ranks = rng.sample(range(N_PEOPLE), N_PEOPLE)
    people = []
    for i in range(N_PEOPLE):
        family = i % N_FAMILIES
        friend = rng.choice([j for j in range(N_PEOPLE) if j != i])
        people.append(Person(
            first=firsts[i], last=surnames[family], town=towns[family % len(towns)], job=rng.choice(JOBS),
            pet=rng.choice(PETS), age=rng.randint(20, 69), friend=friend, rank=ranks[i],
        ))
    return World(seed=seed, people=tuple(people), towns=towns)


# ------------------------------------------------------------------------------------------- items


@dataclass(slots=True)
class _Item:
    """One generated question. ``key`` decides the split; ``question`` must be unique per key phrasing."""

    key: str
    question: str
    answer: str
    answer_type: str
    tier: int
    distractors: tuple[str, ...]  # wrong answers of the same type (another town, a near-miss sum)
    solution: str | None = None
    statement: str | None = None  # plain-text form for documents ("3 + 4 = 7"); None: use the QA form
    mc_question: str | None = None  # multiple-choice phrasing when it differs (code)
    mc_answer: str | None = None
    off_type: tuple[str, ...] = ()  # wrong answers of another type (a job offered for a town)
    meta: dict[str, Any] = field(default_factory=dict)

    def qa_text(self) -> str:
        return format_prompt(self.question) + (self.solution or self.answer)


Sampler = Callable[[random.Random, World], _Item]
Keep = Callable[[str], bool]


def _pick_tier(rng: random.Random, weights: tuple[float, float, float] = (0.4, 0.35, 0.25)) -> int:
    return rng.choices((1, 2, 3), weights)[0]


def _distinct(rng: random.Random, answer: str, pool: list[str], k: int = N_CHOICES - 1) -> tuple[str, ...]:
    """``k`` distinct wrong answers from ``pool`` (in a seeded random order)."""
    wrong = sorted({p for p in pool if p != answer})
    if len(wrong) < k:
        raise AssertionError(f"not enough distractors for {answer!r}")
    return tuple(rng.sample(wrong, k))


def _numeric_distractors(rng: random.Random, value: int) -> tuple[str, ...]:
    """Near misses a model that half-knows the answer would pick: off by one, two or ten."""
    near = [value + d for d in (-10, -2, -1, 1, 2, 10) if value + d >= 0]
    return _distinct(rng, str(value), [str(v) for v in near])


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# ------------------------------------------------------------------------------------------ arithmetic

_OBJECTS = ("apples", "pens", "books", "shells", "coins", "eggs", "cards", "stones")


def _expr_item(a: int, op: str, b: int, tier: int) -> _Item:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    lo, hi = (min(a, b), max(a, b)) if op in "+*" else (a, b)
    key = f"{ {'+': 'add', '-': 'sub', '*': 'mul'}[op]}:{lo},{hi}"
    return _Item(
        key=key, question=f"What is {a} {op} {b}?", answer=str(value), answer_type="numeric", tier=tier,
        distractors=(), statement=f"{a} {op} {b} = {value}", meta={"expression": f"{a} {op} {b}"},
    )


def _word_problem(rng: random.Random, world: World, steps: int) -> _Item:
    name = rng.choice(world.people[:24]).first
    obj = rng.choice(_OBJECTS)
    a, b = rng.randint(2, 20), rng.randint(1, 9)
    if steps == 1 and rng.random() < 0.5:
        b = rng.randint(1, a)
        q = f"{name} has {a} {obj}. {name} gives away {b}. How many {obj} does {name} have now?"
        value, solution, expr = a - b, f"{a} - {b} = {a - b}", f"{a} - {b}"
    elif steps == 1:
        q = f"{name} has {a} {obj}. {name} gets {b} more. How many {obj} does {name} have now?"
        value, solution, expr = a + b, f"{a} + {b} = {a + b}", f"{a} + {b}"
    else:
        c = rng.randint(1, a + b)
        q = f"{name} has {a} {obj}. {name} gets {b} more and then gives away {c}. How many {obj} does {name} have now?"
        value, solution, expr = a + b - c, f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}", f"{a} + {b} - {c}"
    return _Item(key=q, question=q, answer=str(value), answer_type="numeric", tier=1 + steps, distractors=(),
                 solution=solution, meta={"expression": expr})


def _arithmetic(rng: random.Random, world: World) -> _Item:
    """Tier 1: single-digit + and -. Tier 2: two-digit with one digit, tables, one-step word problems.
    Tier 3: two-digit + two-digit and two-step word problems. Half the items are tier 1, so a tiny
    model meets each single-digit fact often enough to learn it (and GRPO groups have variance)."""
    tier = _pick_tier(rng, (0.5, 0.3, 0.2))
    r = rng.random()
    if tier == 1:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        item = _expr_item(a, "+", b, 1) if r < 0.6 else _expr_item(max(a, b), "-", min(a, b), 1)
    elif tier == 2 and r < 0.3:
        item = _word_problem(rng, world, 1)
    elif tier == 2 and r < 0.55:
        item = _expr_item(rng.randint(2, 9), "*", rng.randint(2, 9), 2)
    elif tier == 2:
        item = _expr_item(rng.randint(10, 99), rng.choice("+-"), rng.randint(0, 9), 2)
    elif r < 0.35:
        item = _word_problem(rng, world, 2)
    else:
        item = _expr_item(rng.randint(10, 99), "+", rng.randint(10, 99), 3)
    item.distractors = _numeric_distractors(rng, int(item.answer))
    item.off_type = _OBJECTS
    return item


# ---------------------------------------------------------------------------------------------- people

_BIO = {
    "town": ("{n} lives in {town}.", "{n} has a home in {town}."),
    "job": ("{n} works as {job}.", "{n} is {job}."),
    "pet": ("{n} has a pet {pet}.", "{n} keeps {pet_a}."),
    "age": ("{n} is {age} years old.", "{n} is {age}."),
    "friend": ("{n} is friends with {friend}.", "The friend of {n} is {friend}."),
}
_PEOPLE_QUESTIONS = {
    "town": ("Where does {n} live?", "In which town does {n} live?"),
    "job": ("What is the job of {n}?", "What does {n} do for work?"),
    "pet": ("What pet does {n} have?", "What animal does {n} keep?"),
    "age": ("How old is {n}?", "What is the age of {n}?"),
    "friend": ("Who is the friend of {n}?", "Who is {n} friends with?"),
    "friend_town": ("Where does the friend of {n} live?", "In which town does the friend of {n} live?"),
}


def _pick_person(rng: random.Random, world: World) -> Person:
    return rng.choices(world.people, world.weights())[0]


def biography(person: Person, world: World, rng: random.Random) -> str:
    """All five facts about ``person``, in a random order and wording, always with the full name."""
    friend = world.people[person.friend]
    slots = {"n": person.name, "town": person.town, "job": _a(person.job), "pet": person.pet,
             "pet_a": _a(person.pet), "age": person.age, "friend": friend.name}
    attrs = list(_BIO)
    rng.shuffle(attrs)
    return " ".join(rng.choice(_BIO[a]).format(**slots) for a in attrs)


def _people_answer(person: Person, world: World, attr: str) -> tuple[str, list[str], str]:
    friend = world.people[person.friend]
    return {
        "town": (person.town, list(world.towns), "text"),
        "job": (person.job, list(JOBS), "text"),
        "pet": (person.pet, list(PETS), "text"),
        "age": (str(person.age), [], "numeric"),
        "friend": (friend.name, [p.name for p in world.people if p is not person], "text"),
        "friend_town": (friend.town, list(world.towns), "text"),
    }[attr]


def _people(rng: random.Random, world: World) -> _Item:
    """Tier = the person's fame tier; two-hop questions (the friend's town) are always tier 3."""
    person = _pick_person(rng, world)
    attr = rng.choice(tuple(_PEOPLE_QUESTIONS))
    question = rng.choice(_PEOPLE_QUESTIONS[attr]).format(n=person.name)
    answer, pool, kind = _people_answer(person, world, attr)
    distractors = _numeric_distractors(rng, person.age) if attr == "age" else _distinct(rng, answer, pool)
    tier = 3 if attr == "friend_town" else person.tier
    off = {"town": JOBS + PETS, "job": world.towns + PETS, "pet": world.towns + JOBS, "age": world.towns + JOBS,
           "friend": world.towns + JOBS, "friend_town": JOBS + PETS}[attr]
    return _Item(key=f"{person.name}|{attr}", question=question, answer=answer, answer_type=kind, tier=tier,
                 distractors=distractors, off_type=off, meta={"person": person.name, "attribute": attr})


# ------------------------------------------------------------------------------------------------ code

_OPS = {"add": ("plus", "+", lambda x, k: x + k), "sub": ("minus", "-", lambda x, k: x - k),
        "mul": ("times", "*", lambda x, k: x * k)}
_CMPS = {"gt": ("greater than", ">", lambda x, k: x > k), "lt": ("less than", "<", lambda x, k: x < k),
         "eq": ("equal to", "==", lambda x, k: x == k)}
_SCALAR_VARS = ("x", "n", "y")
_LIST_VARS = ("xs", "nums", "items")
_SCALAR_ARGS = (0, 3, 7, 12)
_LIST_ARGS = ([1, 5, 2, 8], [], [3, 3, 9, 0], [6, 2, 6])


@dataclass(frozen=True)
class _Shape:
    """One function template: its name, English description, body and (independent) semantics."""

    name: Callable[[tuple], str]
    describe: Callable[[str, tuple], str]
    body: Callable[[str, tuple], str]
    call: Callable[[Any, tuple], Any]
    takes_list: bool = False


_LOOP = "    {acc} = 0\n    for i in {v}:\n        if i {cmp} {k}:\n            {acc} += {inc}\n    return {acc}"
_SHAPES = {
    "op1": _Shape(lambda p: f"{p[0]}_{p[1]}", lambda v, p: f"{v} {_OPS[p[0]][0]} {p[1]}",
                  lambda v, p: f"    return {v} {_OPS[p[0]][1]} {p[1]}", lambda x, p: _OPS[p[0]][2](x, p[1])),
    "cmp": _Shape(lambda p: f"is_{p[0]}_{p[1]}", lambda v, p: f"True if {v} is {_CMPS[p[0]][0]} {p[1]}",
                  lambda v, p: f"    return {v} {_CMPS[p[0]][1]} {p[1]}", lambda x, p: _CMPS[p[0]][2](x, p[1])),
    "op2": _Shape(lambda p: f"{p[0]}{p[1]}_{p[2]}{p[3]}",
                  lambda v, p: f"({v} {_OPS[p[0]][0]} {p[1]}) {_OPS[p[2]][0]} {p[3]}",
                  lambda v, p: f"    return ({v} {_OPS[p[0]][1]} {p[1]}) {_OPS[p[2]][1]} {p[3]}",
                  lambda x, p: _OPS[p[2]][2](_OPS[p[0]][2](x, p[1]), p[3])),
    "sum_gt": _Shape(lambda p: f"sum_over_{p[0]}", lambda v, p: f"the sum of the numbers in {v} that are greater than {p[0]}",
                     lambda v, p: _LOOP.format(acc="total", v=v, cmp=">", k=p[0], inc="i"),
                     lambda x, p: sum(i for i in x if i > p[0]), takes_list=True),
    "count_eq": _Shape(lambda p: f"count_{p[0]}", lambda v, p: f"how many times {p[0]} appears in {v}",
                       lambda v, p: _LOOP.format(acc="count", v=v, cmp="==", k=p[0], inc="1"),
                       lambda x, p: sum(1 for i in x if i == p[0]), takes_list=True),
    "scale": _Shape(lambda p: f"scale_{p[0]}", lambda v, p: f"each number in {v} times {p[0]}",
                    lambda v, p: f"    return [i * {p[0]} for i in {v}]", lambda x, p: [i * p[0] for i in x],
                    takes_list=True),
}


@dataclass(frozen=True)
class _CodeSpec:
    """A tiny function: ``kind`` picks the template in ``_SHAPES``, ``p`` its operators and constants."""

    kind: str
    var: str
    p: tuple

    def name(self) -> str:
        return _SHAPES[self.kind].name(self.p)

    def describe(self) -> str:
        return _SHAPES[self.kind].describe(self.var, self.p)

    def source(self, name: str | None = None) -> str:
        return f"def {name or self.name()}({self.var}):\n" + _SHAPES[self.kind].body(self.var, self.p)

    def call(self, arg: Any) -> Any:
        """What the function returns, computed independently of :meth:`source` (tests compare them)."""
        return _SHAPES[self.kind].call(arg, self.p)

    def args(self) -> tuple:
        return _LIST_ARGS if _SHAPES[self.kind].takes_list else _SCALAR_ARGS

    def test_args(self) -> tuple:
        """Inputs around the constant ``k`` (k-1, k, k+1), so a constant or off-by-one body fails."""
        k = next(v for v in self.p if isinstance(v, int))
        if _SHAPES[self.kind].takes_list:
            return ([k, k + 1, 0, k + 3], [], [k, k, 1], [k - 1, 2 * k + 1])
        return (k - 1, k, k + 1, 0)

    def tests(self) -> list[str]:
        return [f"assert {self.name()}({a!r}) == {self.call(a)!r}" for a in self.test_args()]


def _code_spec(rng: random.Random, tier: int) -> _CodeSpec:
    if tier == 1 and rng.random() < 0.5:
        op = rng.choice(tuple(_OPS))
        return _CodeSpec("op1", rng.choice(_SCALAR_VARS), (op, rng.randint(2 if op == "mul" else 1, 20)))
    if tier == 1:
        return _CodeSpec("cmp", rng.choice(_SCALAR_VARS), (rng.choice(tuple(_CMPS)), rng.randint(0, 20)))
    if tier == 2:
        op1, op2 = rng.choice(tuple(_OPS)), rng.choice(tuple(_OPS))
        return _CodeSpec("op2", rng.choice(_SCALAR_VARS), (op1, rng.randint(2, 9), op2, rng.randint(1, 9)))
    return _CodeSpec(rng.choice(("sum_gt", "count_eq", "scale")), rng.choice(_LIST_VARS), (rng.randint(1, 20),))


def _perturb(rng: random.Random, spec: _CodeSpec) -> _CodeSpec:
    """A plausible wrong function: another operator or another constant."""
    p = list(spec.p)
    if spec.kind in ("op1", "cmp", "op2") and rng.random() < 0.5:
        table = _CMPS if spec.kind == "cmp" else _OPS
        i = rng.choice((0, 2)) if spec.kind == "op2" else 0
        p[i] = rng.choice([o for o in table if o != p[i]])
    else:
        i = rng.choice([j for j, v in enumerate(p) if isinstance(v, int)])
        p[i] = max(0, p[i] + rng.choice((-2, -1, 1, 2, 3)))
    return _CodeSpec(spec.kind, spec.var, tuple(p))


def _other_kinds(spec: _CodeSpec) -> tuple[str, ...]:
    """Functions of another shape (a list loop offered for arithmetic on a number, and back)."""
    k = next(v for v in spec.p if isinstance(v, int))
    if spec.kind in ("op1", "cmp", "op2"):
        others = [_CodeSpec("scale", "xs", (k,)), _CodeSpec("count_eq", "nums", (k,)), _CodeSpec("sum_gt", "items", (k,))]
    else:
        others = [_CodeSpec("op1", "x", ("add", k)), _CodeSpec("cmp", "n", ("gt", k)), _CodeSpec("op1", "y", ("mul", k))]
    return tuple(o.source("f") for o in others)


def _code(rng: random.Random, world: World) -> _Item:
    """Tier 1: one operator or comparison. Tier 2: two operators. Tier 3: loops over a list."""
    tier = _pick_tier(rng)
    spec = _code_spec(rng, tier)
    desc = spec.describe()
    wrong: set[str] = set()
    right = spec.source("f")
    while len(wrong) < N_CHOICES - 1:
        other = _perturb(rng, spec).source("f")
        if other != right:
            wrong.add(other)
    usage = f"assert {spec.name()}({spec.args()[-1]!r}) == {spec.call(spec.args()[-1])!r}"
    return _Item(
        key=f"{spec.kind}|{spec.var}|{spec.p}", question=f"Write a Python function {spec.name()}({spec.var}) that returns {desc}.",
        answer=spec.source(), answer_type="code", tier=tier, distractors=tuple(rng.sample(sorted(wrong), N_CHOICES - 1)),
        statement=f"# {spec.name()} returns {desc}\n{spec.source()}\n{usage}",
        mc_question=f"Which function returns {desc}?", mc_answer=right, off_type=_other_kinds(spec),
        meta={"test_list": spec.tests(), "entry_point": spec.name()},
    )


# ----------------------------------------------------------------------------------------------- prose

ANIMALS = {  # animal: (food, home, sound) — fixed common sense, the same in every world
    "cat": ("fish", "basket", "meow"), "dog": ("bones", "kennel", "woof"), "cow": ("grass", "barn", "moo"),
    "duck": ("bread", "pond", "quack"), "bird": ("seeds", "nest", "tweet"), "horse": ("hay", "stable", "neigh"),
    "mouse": ("cheese", "hole", "squeak"), "frog": ("flies", "lake", "croak"), "bee": ("nectar", "hive", "buzz"),
    "sheep": ("clover", "field", "baa"), "pig": ("apples", "pen", "oink"), "owl": ("mice", "tree", "hoot"),
}
WEATHER = {"rainy": "took an umbrella", "sunny": "went to the beach", "snowy": "built a snowman",
           "windy": "flew a kite", "cold": "wore a warm coat"}
EVENTS = {"lost a toy": "sad", "got a gift": "happy", "heard a loud noise": "scared", "won a race": "proud",
          "missed the bus": "upset"}
COLORS = ("red", "blue", "green", "yellow", "brown", "black", "white", "pink")
_ATTR_Q = {0: "What does a {a} eat?", 1: "Where does a {a} live?", 2: "What sound does a {a} make?"}


def story(rng: random.Random, world: World) -> str:
    """A short story: one or two characters with pets, a day's weather and an event."""
    names = rng.sample([p.first for p in world.people[:32]], rng.randint(1, 2))
    parts: list[str] = []
    for name in names:
        animal, color = rng.choice(tuple(ANIMALS)), rng.choice(COLORS)
        food, home, sound = ANIMALS[animal]
        parts.append(f"{name} had {_a(color)} {animal}.")
        parts.extend(rng.sample([f"The {animal} lived in {_a(home)}.", f"The {animal} ate {food}.",
                                 f"The {animal} said {sound}."], rng.randint(1, 3)))
    who = rng.choice(names)
    weather = rng.choice(tuple(WEATHER))
    parts.append(f"One {weather} day, {who} {WEATHER[weather]}.")
    if rng.random() < 0.7:
        event = rng.choice(tuple(EVENTS))
        parts.append(f"Then {who} {event} and felt {EVENTS[event]}.")
    return " ".join(parts)


def _prose(rng: random.Random, world: World) -> _Item:
    """Tier 1: what an animal eats / where it lives / its sound, or a one-pet story question.
    Tier 2: weather and feelings of a named character, or a two-pet story. Tier 3: three pets."""
    tier = _pick_tier(rng)
    r = rng.random()
    if tier == 1 and r < 0.5:
        animal, slot = rng.choice(tuple(ANIMALS)), rng.randint(0, 2)
        q = _ATTR_Q[slot].format(a=animal)
        answer = ANIMALS[animal][slot]
        off = tuple(v[o] for v in ANIMALS.values() for o in range(3) if o != slot)
        return _Item(key=q, question=q, answer=answer, answer_type="text", tier=1, off_type=off,
                     distractors=_distinct(rng, answer, [v[slot] for v in ANIMALS.values()]))
    if tier == 2 and r < 0.5:
        name = rng.choice(world.people[:32]).first
        if rng.random() < 0.5:
            weather = rng.choice(tuple(WEATHER))
            q, answer, pool = f"It was {weather}, so what did {name} do?", WEATHER[weather], list(WEATHER.values())
            off = tuple(EVENTS.values())
        else:
            event = rng.choice(tuple(EVENTS))
            q, answer, pool = f"{name} {event}. How did {name} feel?", EVENTS[event], list(EVENTS.values())
            off = tuple(WEATHER.values())
        return _Item(key=q, question=q, answer=answer, answer_type="text", tier=2, off_type=off,
                     distractors=_distinct(rng, answer, pool))
    k = tier  # characters in the story
    names = rng.sample([p.first for p in world.people[:32]], k)
    animals = rng.sample(tuple(ANIMALS), k)
    colors = rng.sample(COLORS, k)
    context = " ".join(f"{n} has {_a(c)} {a}." for n, a, c in zip(names, animals, colors))
    i = rng.randrange(k)
    q = f"{context} What color is the {animals[i]} of {names[i]}?"
    others = [c for c in colors if c != colors[i]] + [c for c in COLORS if c not in colors]
    return _Item(key=q, question=q, answer=colors[i], answer_type="text", tier=tier, off_type=tuple(ANIMALS),
                 distractors=tuple(others[: N_CHOICES - 1]))


_SAMPLERS: dict[str, Sampler] = {"arithmetic": _arithmetic, "people": _people, "code": _code, "prose": _prose}


# -------------------------------------------------------------------------------------------- documents


def _draw(rng: random.Random, world: World, sampler: Sampler, keep: Keep) -> _Item:
    while True:
        item = sampler(rng, world)
        if keep(item.key):
            return item


def _draw_text(rng: random.Random, world: World, make: Callable[[random.Random, World], str], keep: Keep) -> str:
    while True:
        text = make(rng, world)
        if keep(text):
            return text


def _doc_arithmetic(rng: random.Random, world: World, keep: Keep) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        item = _draw(rng, world, _arithmetic, keep)
        lines.append(item.statement if item.statement and rng.random() < 0.5 else item.qa_text())
    return "\n".join(lines)


def _doc_people(rng: random.Random, world: World, keep: Keep) -> str:
    bio = lambda r, w: biography(_pick_person(r, w), w, r)  # noqa: E731
    parts = [_draw_text(rng, world, bio, keep) for _ in range(rng.randint(1, 2))]
    parts += [_draw(rng, world, _people, keep).qa_text() for _ in range(rng.randint(0, 2))]
    return "\n".join(parts)


def _doc_code(rng: random.Random, world: World, keep: Keep) -> str:
    parts = []
    for _ in range(rng.randint(2, 3)):
        item = _draw(rng, world, _code, keep)
        parts.append(item.statement if rng.random() < 0.6 else item.qa_text())
    return "\n\n".join(parts)


def _doc_prose(rng: random.Random, world: World, keep: Keep) -> str:
    parts = [_draw_text(rng, world, story, keep)]
    parts += [_draw(rng, world, _prose, keep).qa_text() for _ in range(rng.randint(0, 2))]
    return "\n".join(parts)


_DOC_BUILDERS = {"arithmetic": _doc_arithmetic, "people": _doc_people, "code": _doc_code, "prose": _doc_prose}


def _check(domain: str, split: str, splits: tuple[str, ...], n: int) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown toyworld domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if split not in splits:
        raise ConfigError(f"unknown toyworld split {split!r}; choose one of {', '.join(splits)}")
    if n < 0:
        raise ConfigError(f"the number of toyworld items must be >= 0, got {n}")


def _keeper(domain: str, seed: int, eval_side: bool) -> Keep:
    return lambda key: is_eval_key(domain, key, seed) == eval_side


def documents(domain: str, n: int, seed: int = 0, split: str = "train") -> list[str]:
    """``n`` pretraining documents of ``domain`` (each a few hundred bytes of plain text).

    ``split="train"`` uses only train-side keys; ``split="heldout"`` only eval-side keys, for
    in-loop bits-per-byte on text the model never trained on (see the module docstring). Documents
    mix plain statements (``"17 + 25 = 42"``, biographies, stories, commented functions) with QA
    lines in :data:`PROMPT_TEMPLATE` form.
    """
    _check(domain, split, DOC_SPLITS, n)
    world = build_world(seed)
    rng = random.Random(f"toyworld-docs|{domain}|{split}|{seed}")
    keep = _keeper(domain, seed, split == "heldout")
    return [_DOC_BUILDERS[domain](rng, world, keep) for _ in range(n)]


def _unique_items(domain: str, n: int, seed: int, eval_side: bool, purpose: str) -> list[_Item]:
    """``n`` items with distinct questions from one side, or a ConfigError naming the capacity."""
    world = build_world(seed)
    rng = random.Random(f"toyworld-{purpose}|{domain}|{seed}|{eval_side}")
    keep = _keeper(domain, seed, eval_side)
    seen: set[str] = set()
    out: list[_Item] = []
    misses, budget = 0, 2000 + 20 * n
    while len(out) < n:
        item = _SAMPLERS[domain](rng, world)
        q = item.mc_question if purpose == "mc" and item.mc_question else item.question
        if not keep(item.key) or q in seen:
            misses += 1
            if misses > budget:
                raise ConfigError(
                    f"toyworld domain {domain!r} has only about {len(out)} distinct "
                    f"{'evaluation' if eval_side else 'training'}-side items ({purpose}) for seed {seed}; ask for fewer than {n}"
                )
            continue
        seen.add(q)
        out.append(item)
    return out


def _original_id(domain: str, question: str) -> str:
    return hashlib.blake2b(f"{domain}|{question}".encode(), digest_size=6).hexdigest()


def _meta(item: _Item, split: str, seed: int, oid: str, kind: str) -> dict[str, Any]:
    return {"source": "toyworld", "original_id": oid, "split": split, "seed": seed, "tier": item.tier,
            "key": item.key, "kind": kind, **item.meta}


def records(domain: str, n: int, seed: int = 0, split: str = "train") -> list[Record]:
    """``n`` question/answer records with verifiable answers, dataset ``toyworld_<domain>``.

    ``split="train"`` and ``split="test"`` come from disjoint key sides (no shared question, nor
    any shared fact/expression key). ``answer_type`` is ``numeric`` (arithmetic, ages), ``text``
    (exact match: towns, jobs, colors...), or ``code`` (``metadata['test_list']`` holds assert lines
    and ``metadata['entry_point']`` the function name, as in MBPP). ``solution`` holds the worked
    steps of word problems; the last number in it is the answer.
    """
    _check(domain, split, RECORD_SPLITS, n)
    dataset = f"toyworld_{domain}"
    out = []
    for item in _unique_items(domain, n, seed, split == "test", f"records-{split}"):
        oid = _original_id(domain, item.question)
        out.append(Record(
            id=make_id(dataset, oid), dataset=dataset, domain=domain, question=item.question,
            reference_answer=item.answer, answer_type=item.answer_type, solution=item.solution,
            metadata=_meta(item, split, seed, oid, "qa"),
        ))
    return out


OFF_TYPE_DISTRACTORS = {1: 2, 2: 1, 3: 0}  # per tier: how many of the 3 wrong choices are of another type


def _mc_distractors(rng: random.Random, item: _Item, answer: str) -> list[str]:
    n_off = OFF_TYPE_DISTRACTORS[item.tier]
    off = rng.sample(sorted({o for o in item.off_type if o != answer}), n_off)
    return off + list(item.distractors[: N_CHOICES - 1 - n_off])


def mc_items(domain: str, n: int, seed: int = 0) -> list[Record]:
    """``n`` four-way multiple-choice items (``answer_type="choice"``) from the evaluation side.

    Dataset ``toyworld_<domain>_mc``; score each choice as the continuation of
    ``format_prompt(question)``; ``label`` is the gold index, ``reference_answer`` its text.
    Chance accuracy is 0.25. Difficulty is graded by tier (:data:`OFF_TYPE_DISTRACTORS`): tier-1
    items have two wrong choices of another type (a job offered as a town, a word offered as a sum)
    and one near miss of the same type; tier-2 items one and two; tier-3 items only near misses
    (off-by-one sums, another town, a function with another operator or constant). A model that
    knows only the answer formats therefore scores about 0.5 / 0.33 / 0.25 by tier, one that knows
    the facts higher, and learning curves are graded rather than all-or-nothing.
    """
    _check(domain, "test", RECORD_SPLITS, n)
    dataset = f"toyworld_{domain}_mc"
    rng = random.Random(f"toyworld-mc-order|{domain}|{seed}")
    out = []
    for item in _unique_items(domain, n, seed, True, "mc"):
        question, answer = item.mc_question or item.question, item.mc_answer or item.answer
        choices = [answer, *_mc_distractors(rng, item, answer)]
        rng.shuffle(choices)
        oid = _original_id(domain, "mc|" + question)
        out.append(Record(
            id=make_id(dataset, oid), dataset=dataset, domain=domain, question=question, reference_answer=answer,
            answer_type="choice", choices=choices, label=choices.index(answer),
            metadata=_meta(item, "test", seed, oid, "mc"),
        ))
    return out


def bpb_items(domain: str, n: int, seed: int = 0) -> list[Record]:
    """Bits-per-byte items: the test records, whose gold continuation of ``format_prompt(question)``
    is ``Record.completion`` (the worked solution when there is one, else ``reference_answer``)."""
    return records(domain, n, seed, split="test")
