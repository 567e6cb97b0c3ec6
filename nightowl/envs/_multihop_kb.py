"""A seeded generator of fictional knowledge bases, documents and multi-hop questions.

Every task seed builds its own small world (people, cities, countries, companies,
universities) with *functional* relations (each subject has exactly one object), so a
question composed along a relation chain has exactly one answer. Documents are written
from the facts, one per entity (its own facts plus a few mentions of others, which act as
distractors for retrieval); the question names only the chain's first entity and
describes each hop, like HotpotQA/MuSiQue questions in shape:

    "What is the country that the city where the founder of Dravix Systems was born is in?"

Answering needs ``hops`` lookups (one per chain entity but the last) and one answer.
Nothing here touches the network or a model; the same seed always gives the same world.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field

# --- names ---------------------------------------------------------------------------
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br",
           "dr", "kl", "tr", "st", "th", "qu", "sh", "gr", "pl", "h", "j", "w"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ou", "ei"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x", "nd", "rk", "m", "v"]
_COMPANY_SUFFIX = ["Systems", "Holdings", "Industries", "Labs", "Works", "Dynamics",
                   "Foods", "Logistics", "Media", "Robotics"]
_CITY_SUFFIX = ["port", "ford", "haven", "ton", "bury", "mere", "stad", "vale", "wick", "burg"]
_COUNTRY_SUFFIX = ["ia", "and", "stan", "ora", "eth", "ovia"]
_UNI_PATTERNS = ["{name} University", "{name} Institute of Technology", "{name} College",
                 "{name} Polytechnic"]


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


# --- schema --------------------------------------------------------------------------
PERSON, CITY, COUNTRY, COMPANY, UNIVERSITY = "person", "city", "country", "company", "university"


@dataclass(frozen=True)
class Relation:
    """A functional relation ``subject_type -> object_type`` with its wording."""

    name: str
    subj: str
    obj: str
    #: how a document states the fact: "{s} was born in {o}."
    fact: str
    #: how a question describes the object given a description of the subject
    describe: str


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in [
        Relation("born_in", PERSON, CITY, "{s} was born in {o}.", "the city where {s} was born"),
        Relation("works_for", PERSON, COMPANY, "{s} works for {o}.",
                 "the company that {s} works for"),
        Relation("studied_at", PERSON, UNIVERSITY, "{s} studied at {o}.",
                 "the university where {s} studied"),
        Relation("headquartered_in", COMPANY, CITY, "{s} is headquartered in {o}.",
                 "the city where {s} is headquartered"),
        Relation("founded_by", COMPANY, PERSON, "{s} was founded by {o}.", "the founder of {s}"),
        Relation("ceo", COMPANY, PERSON, "The chief executive of {s} is {o}.",
                 "the chief executive of {s}"),
        Relation("located_in", UNIVERSITY, CITY, "{s} is located in {o}.",
                 "the city where {s} is located"),
        Relation("in_country", CITY, COUNTRY, "{s} is a city in {o}.",
                 "the country that {s} is in"),
        Relation("mayor", CITY, PERSON, "The mayor of {s} is {o}.", "the mayor of {s}"),
        Relation("president", COUNTRY, PERSON, "The president of {s} is {o}.",
                 "the president of {s}"),
        Relation("capital", COUNTRY, CITY, "The capital of {s} is {o}.", "the capital of {s}"),
    ]
}

_OUTGOING: dict[str, list[str]] = {}
for _r in RELATIONS.values():
    _OUTGOING.setdefault(_r.subj, []).append(_r.name)


@dataclass(frozen=True)
class Entity:
    """One fictional entity."""

    id: str
    type: str
    name: str


@dataclass(frozen=True)
class Question:
    """A multi-hop question with its gold chain (entity ids) and exact answer."""

    text: str
    answer: str
    chain: tuple[str, ...]
    relations: tuple[str, ...]

    @property
    def hops(self) -> int:
        """Number of relation hops."""
        return len(self.relations)


@dataclass
class World:
    """A knowledge base and its documents."""

    seed: int
    entities: dict[str, Entity]
    facts: dict[tuple[str, str], str]  # (subject id, relation) -> object id
    docs: list[tuple[str, str]] = field(default_factory=list)  # (title, text)
    doc_of: dict[str, int] = field(default_factory=dict)  # entity id -> doc index

    def name(self, eid: str) -> str:
        """Display name of an entity."""
        return self.entities[eid].name


def _unique_names(rng: random.Random, n: int, make, taken: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        nm = make()
        if nm.lower() in taken or tries > 10_000 and nm in out:
            continue
        taken.add(nm.lower())
        out.append(nm)
    return out


def build_world(seed: int, *, n_people: int = 24, n_cities: int = 8, n_countries: int = 3,
                n_companies: int = 7, n_universities: int = 4) -> World:
    """Generate the knowledge base and documents for ``seed``."""
    rng = random.Random(f"multihop-world-{seed}")
    taken: set[str] = set()
    # Surnames are drawn from a small pool so that people share them: retrieval by a
    # surname alone is ambiguous, as with real entity names.
    surnames = _unique_names(rng, max(4, n_people // 3), lambda: _word(rng, 2), set())
    people = _unique_names(
        rng, n_people, lambda: f"{_word(rng, rng.choice([1, 2]))} {rng.choice(surnames)}", taken
    )
    cities = _unique_names(rng, n_cities, lambda: _word(rng, 1) + rng.choice(_CITY_SUFFIX), taken)
    countries = _unique_names(
        rng, n_countries, lambda: _word(rng, rng.choice([1, 2])) + rng.choice(_COUNTRY_SUFFIX),
        taken,
    )
    # Companies share stems so that "Dravix Systems" and "Dravix Foods" compete in search.
    stems = _unique_names(rng, max(3, n_companies // 2 + 1), lambda: _word(rng, 2), set())
    companies = _unique_names(
        rng, n_companies, lambda: f"{rng.choice(stems)} {rng.choice(_COMPANY_SUFFIX)}", taken
    )
    universities = _unique_names(
        rng, n_universities,
        lambda: rng.choice(_UNI_PATTERNS).format(name=_word(rng, 2)),
        taken,
    )
    entities: dict[str, Entity] = {}
    by_type: dict[str, list[str]] = {}
    for typ, names in [(PERSON, people), (CITY, cities), (COUNTRY, countries),
                       (COMPANY, companies), (UNIVERSITY, universities)]:
        for i, nm in enumerate(names):
            eid = f"{typ}{i}"
            entities[eid] = Entity(eid, typ, nm)
            by_type.setdefault(typ, []).append(eid)

    facts: dict[tuple[str, str], str] = {}
    for eid, ent in entities.items():
        for rel_name in _OUTGOING.get(ent.type, []):
            rel = RELATIONS[rel_name]
            pool = [o for o in by_type[rel.obj] if o != eid]
            if rel_name == "ceo":  # the chief executive is not the founder
                pool = [o for o in pool if o != facts.get((eid, "founded_by"))]
            if rel_name == "capital":  # the capital lies in the country
                inside = [c for c in by_type[CITY] if facts.get((c, "in_country")) == eid]
                pool = inside or pool
            facts[(eid, rel_name)] = rng.choice(pool)

    world = World(seed=seed, entities=entities, facts=facts)
    _write_docs(world, rng)
    return world


def _write_docs(world: World, rng: random.Random) -> None:
    """One document per entity: its own facts, then a few mentions from other entities."""
    incoming: dict[str, list[tuple[str, str]]] = {}
    for (s, r), o in world.facts.items():
        incoming.setdefault(o, []).append((s, r))
    for eid, ent in world.entities.items():
        sents = [f"{ent.name} is a {ent.type}."]
        own = [RELATIONS[r].fact.format(s=ent.name, o=world.name(o))
               for (s, r), o in world.facts.items() if s == eid]
        rng.shuffle(own)
        sents.extend(own)
        # Mentions from elsewhere (distractors): at most two, so documents stay short.
        others = sorted(incoming.get(eid, []))
        rng.shuffle(others)
        sents += [RELATIONS[r].fact.format(s=world.name(s), o=ent.name) for s, r in others[:2]]
        world.doc_of[eid] = len(world.docs)
        world.docs.append((ent.name, " ".join(sents)))


def _phrase(world: World, chain: list[str], rels: list[str]) -> str:
    desc = world.name(chain[0])
    for r in rels:
        desc = RELATIONS[r].describe.format(s=desc)
    return f"What is {desc}?"


def make_question(world: World, hops: int, seed: int) -> Question:
    """Compose a ``hops``-hop question along a random relation chain with distinct entities."""
    if not 1 <= hops <= 6:
        raise ValueError(f"hops must be in 1..6, got {hops}")
    rng = random.Random(f"multihop-question-{hops}-{seed}")
    starts = sorted(world.entities)
    for _ in range(10_000):
        chain = [rng.choice(starts)]
        rels: list[str] = []
        for _h in range(hops):
            options = list(_OUTGOING.get(world.entities[chain[-1]].type, []))
            rng.shuffle(options)
            steps = [(r, o) for r in options if (o := world.facts[(chain[-1], r)]) not in chain]
            if not steps:
                break
            rels.append(steps[0][0])
            chain.append(steps[0][1])
        else:
            answer, text = world.name(chain[-1]), _phrase(world, chain, rels)
            # The answer's words must not appear in the question (no shortcut).
            if not set(normalize_answer(answer).split()) & set(normalize_answer(text).split()):
                return Question(text=text, answer=answer, chain=tuple(chain),
                                relations=tuple(rels))
    raise RuntimeError(f"no {hops}-hop question found for seed {seed}")  # pragma: no cover


# --- scoring (SQuAD-style) ---------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (SQuAD)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised strings."""
    p = normalize_answer(prediction).split()
    g = normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)
