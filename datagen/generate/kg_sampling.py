"""Sample question material from a knowledge graph, spreading it over as much of the graph as possible.

Run it through the generator:  datagen self-kg --graph seeds/kg/plants.tsv --num 20 --out gen/kg/

Four patterns, each a ``Sample`` holding the triples a question and its answer may use:

- ``neighbourhood``: an entity and its outgoing facts grouped by relation ("what do we know about X?");
  entities with at least two facts, at most ``max_facts`` facts.
- ``fact``: one (head, relation) with all its tails, i.e. a 1-hop question with its complete answer
  (``complete=False`` when more than ``max_facts`` tails had to be left out).
- ``path``: a 2-hop chain a -r1-> b -r2-> c with a, b, c distinct, so no chain cycles back to a;
  ``single1``/``single2`` say whether b is a's only r1 and c is b's only r2; when both hold
  (``composable``), "what is the r2 of the r1 of a?" has exactly the answer c.
- ``comparison``: two entities that share a relation, with their tails for it (shared tails first, so a
  cap at ``max_facts`` never hides what they have in common; ``*_complete`` says nothing was left out).

Coverage: every pick prefers what has been used least so far, seeded and deterministic. Relations are
chosen by the smallest share of their facts used so far (``uses / facts``), so rare relations come early and
frequent ones proportionally; a relation's heads by how often their facts for it were used, then by overall
use; neighbourhood centres and path middles by how often the pattern centred on them, then by overall use;
ties broken by a seeded random order. Priorities only
grow, so a lazy heap finds the minimum in O(log n) (a stale entry is re-pushed with its current priority),
which keeps 1,000 samples from a 100k-triple graph well under a second. ``coverage()`` reports the share
of entities, relations and triples the accepted samples touched.

    sampler = KGSampler(load_graph("seeds/kg/plants.tsv"), seed=0)
    samples = sampler.sample(100)
    sampler.coverage()["entities"]["share"]
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

PATTERNS = ("neighbourhood", "fact", "path", "comparison")
Triple = tuple[str, str, str]

_CANDIDATES = 64  # a pick among more candidates than this looks at a seeded random subset of this size
_DUPLICATE_STREAK = 50  # this many repeats in a row means a pattern has nothing new left


@dataclass(frozen=True)
class Sample:
    """What one question may be about: ``triples`` (ids) support it, ``answers`` are the ids it asks for."""

    pattern: str
    triples: tuple[Triple, ...]
    answers: tuple[str, ...]
    slots: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)  # pattern-specific, ids

    @property
    def key(self) -> str:
        """A stable id of the content (pattern + triples), equal across runs and machines."""
        payload = json.dumps([self.pattern, sorted(self.triples)], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def entities(self) -> set[str]:
        return {t[0] for t in self.triples} | {t[2] for t in self.triples}

    @property
    def topic(self) -> tuple[str, ...]:
        """What the question is about: the centre, the head, a path's two ends, the two compared entities."""
        s = self.slots
        keys = {
            "neighbourhood": ("entity",),
            "fact": ("head",),
            "path": ("head", "tail"),
            "comparison": ("first", "second"),
        }.get(self.pattern, ())
        if keys and all(k in s for k in keys):
            return tuple(s[k] for k in keys)
        return tuple(dict.fromkeys(h for h, _, _ in self.triples))


class FactIndex:
    """Lookups the samplers and the grounding check share, built in one pass over the edges."""

    def __init__(self, G: nx.MultiDiGraph):
        self.G = G
        self.tails: dict[tuple[str, str], list[str]] = {}
        self.heads: dict[str, list[str]] = {}
        self.size: Counter[str] = Counter()
        for head, tail, relation in G.edges(keys=True):
            pair = (head, relation)
            if pair not in self.tails:
                self.tails[pair] = []
                self.heads.setdefault(relation, []).append(head)
            self.tails[pair].append(tail)
            self.size[relation] += 1
        for tails in self.tails.values():
            tails.sort()
        self.literal = {n for n, d in G.nodes(data=True) if d.get("literal")}
        self.entities = [n for n in G.nodes if n not in self.literal]
        # A relation is single-valued when no head has two tails for it (e.g. a plant's family).
        multi = {r for (_, r), tails in self.tails.items() if len(tails) > 1}
        self.single_valued = set(self.heads) - multi
        self._ranges: dict[str, set[str]] = {}

    def range_of(self, relation: str) -> set[str]:
        """Every tail ``relation`` has anywhere in the graph (built on first use)."""
        if relation not in self._ranges:
            self._ranges[relation] = {t for h in self.heads.get(relation, ()) for t in self.tails[(h, relation)]}
        return self._ranges[relation]

    def out_groups(self, head: str) -> dict[str, list[str]]:
        """Outgoing facts of ``head`` grouped by relation, relations in sorted order."""
        relations = {relation for keys in self.G.succ[head].values() for relation in keys}
        return {r: self.tails[(head, r)] for r in sorted(relations)}


class _LeastUsed:
    """Items by a priority that only grows: peek() returns one with the smallest current priority.

    Entries hold the priority they were pushed with, a lower bound of the current one; when the top entry
    is stale it is re-pushed with its current priority, so the top that survives is the true minimum.
    Ties fall to a seeded random order fixed at construction.
    """

    def __init__(self, items: Iterable[Hashable], priority: Callable[[Any], float], rng: random.Random):
        self._priority = priority
        self._heap = [(priority(x), rng.random(), i, x) for i, x in enumerate(items)]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def peek(self) -> Any:
        heap = self._heap
        while heap:
            stored, tie, i, item = heap[0]
            now = self._priority(item)
            if now == stored:
                return item
            heapq.heapreplace(heap, (now, tie, i, item))
        return None

    def drop_top(self) -> None:
        heapq.heappop(self._heap)


class KGSampler:
    """Coverage-seeking, seeded samplers over one graph; ``sample(n)`` mixes the patterns in turn."""

    def __init__(self, G: nx.MultiDiGraph, seed: int = 0, max_facts: int = 8, index: FactIndex | None = None):
        self.G = G
        self.index = index or FactIndex(G)
        self.rng = random.Random(seed)
        self.max_facts = max_facts
        self.entity_uses: Counter[str] = Counter()
        self.relation_uses: Counter[str] = Counter()
        self.pair_uses: Counter[tuple[str, str]] = Counter()  # samples that used facts of (head, relation)
        self.triple_uses: Counter[Triple] = Counter()
        self.anchor_uses: Counter[tuple[str, str]] = Counter()  # (pattern, entity) a sample was centred on
        self._heaps: dict[Any, _LeastUsed] = {}
        self._touched_entities: set[str] = set()
        self._touched_relations: set[str] = set()
        self._touched_triples: set[Triple] = set()
        self.by_pattern: Counter[str] = Counter()
        self.exhausted: list[str] = []

    # ------------------------------------------------------------------------------------------ choosing

    def _anchor_priority(self, pattern: str) -> Callable[[str], tuple[int, int]]:
        """Entities not yet centred on by this pattern first, then the least used overall."""
        return lambda entity: (self.anchor_uses[(pattern, entity)], self.entity_uses[entity])

    def _head_priority(self, relation: str) -> Callable[[str], tuple[int, int]]:
        """Heads whose ``relation`` facts were used least first, then the least used overall."""
        return lambda head: (self.pair_uses[(head, relation)], self.entity_uses[head])

    def _relation_priority(self, relation: str) -> float:
        return self.relation_uses[relation] / self.index.size[relation]

    def _heap(
        self, name: Any, items: Callable[[], Iterable[Hashable]], priority: Callable[[Any], float]
    ) -> _LeastUsed:
        if name not in self._heaps:
            self._heaps[name] = _LeastUsed(items(), priority, self.rng)
        return self._heaps[name]

    def _least_used(self, candidates: Sequence[str], exclude: set[str] = frozenset()) -> str | None:
        """The least-used entity among ``candidates`` (a seeded random subset of them when there are many)."""
        pool = (
            [c for c in self.rng.sample(candidates, _CANDIDATES) if c not in exclude]
            if len(candidates) > _CANDIDATES * 4
            else []
        )
        if not pool:
            pool = [c for c in candidates if c not in exclude]
        if not pool:
            return None
        return min(pool, key=lambda c: (self.entity_uses[c], self.rng.random()))

    def _least_used_relation(self, relations: Iterable[str]) -> str:
        return min(sorted(relations), key=lambda r: (self.relation_uses[r], self._relation_priority(r)))

    # ------------------------------------------------------------------------------------------ patterns

    def neighbourhood(self) -> Sample | None:
        """All outgoing facts of the least-used entity with two or more (capped at ``max_facts``)."""
        index = self.index
        heap = self._heap(
            "neighbourhood",
            lambda: [e for e in index.entities if self.G.out_degree(e) >= 2],
            self._anchor_priority("neighbourhood"),
        )
        entity = heap.peek()
        if entity is None:
            return None
        groups = index.out_groups(entity)
        # Relations with a fact no sample has used yet (to an entity none has used, best) first.
        order = sorted(
            groups,
            key=lambda r: (
                min((self.triple_uses[(entity, r, t)], self.entity_uses[t]) for t in groups[r]),
                self.relation_uses[r],
                r,
            ),
        )
        kept: dict[str, list[str]] = {}
        budget = self.max_facts
        for relation in order:
            if budget <= 0:
                break
            kept[relation] = groups[relation][:budget]
            budget -= len(kept[relation])
        triples = tuple((entity, r, t) for r in sorted(kept) for t in kept[r])
        return Sample(
            "neighbourhood",
            triples,
            tuple(t for _, _, t in triples),
            {
                "entity": entity,
                "complete": len(triples) == sum(map(len, groups.values())),
                "groups": [
                    {"relation": r, "tails": kept[r], "complete": len(kept[r]) == len(groups[r])} for r in sorted(kept)
                ],
            },
        )

    def fact(self) -> Sample | None:
        """A (head, relation) and all its tails: the relation with the smallest share used, its least-used head."""
        index = self.index
        relation = self._heap("fact", lambda: list(index.heads), self._relation_priority).peek()
        if relation is None:
            return None
        head = self._heap(("heads", relation), lambda: index.heads[relation], self._head_priority(relation)).peek()
        tails = index.tails[(head, relation)]
        shown = tails[: self.max_facts]
        return Sample(
            "fact",
            tuple((head, relation, t) for t in shown),
            tuple(shown),
            {"head": head, "relation": relation, "tails": shown, "complete": len(shown) == len(tails)},
        )

    def path(self) -> Sample | None:
        """A 2-hop chain a -r1-> b -r2-> c, distinct a, b, c, through the least-used middle entity b."""
        G, index = self.G, self.index
        heap = self._heap(
            "path", lambda: [e for e in index.entities if _has_path_through(G, e)], self._anchor_priority("path")
        )
        while len(heap):
            middle = heap.peek()
            preds = [a for a in G.pred[middle] if a != middle]
            succs = [c for c in G.succ[middle] if c != middle]
            # a must leave some c other than itself: a 2-cycle a -> b -> a is not a path
            head = self._least_used(preds, exclude=set(succs) if len(succs) == 1 else set())
            if head is None:
                heap.drop_top()  # only cycles run through this entity
                continue
            tail = self._least_used(succs, exclude={head})
            r1 = self._least_used_relation(G.succ[head][middle])
            r2 = self._least_used_relation(G.succ[middle][tail])
            single1, single2 = index.tails[(head, r1)] == [middle], index.tails[(middle, r2)] == [tail]
            return Sample(
                "path",
                ((head, r1, middle), (middle, r2, tail)),
                (tail,),
                {
                    "head": head,
                    "relation1": r1,
                    "middle": middle,
                    "relation2": r2,
                    "tail": tail,
                    "single1": single1,
                    "single2": single2,
                    "composable": single1 and single2,
                },
            )
        return None

    def comparison(self) -> Sample | None:
        """Two entities with the same relation and their tails for it, least-used relation and entities first."""
        index = self.index
        heap = self._heap(
            "comparison", lambda: [r for r in index.heads if len(index.heads[r]) >= 2], self._relation_priority
        )
        relation = heap.peek()
        if relation is None:
            return None
        first = self._heap(("heads", relation), lambda: index.heads[relation], self._head_priority(relation)).peek()
        second = self._least_used(index.heads[relation], exclude={first})
        all_first, all_second = index.tails[(first, relation)], index.tails[(second, relation)]
        # Shared tails go first, so a cap never hides what the two have in common.
        first_tails = sorted(all_first, key=lambda t: (t not in all_second, t))[: self.max_facts]
        second_tails = sorted(all_second, key=lambda t: (t not in all_first, t))[: self.max_facts]
        triples = tuple((first, relation, t) for t in first_tails) + tuple((second, relation, t) for t in second_tails)
        return Sample(
            "comparison",
            triples,
            tuple(dict.fromkeys(first_tails + second_tails)),
            {
                "relation": relation,
                "first": first,
                "second": second,
                "first_tails": first_tails,
                "second_tails": second_tails,
                "first_complete": len(first_tails) == len(all_first),
                "second_complete": len(second_tails) == len(all_second),
            },
        )

    # ------------------------------------------------------------------------------------------ driving

    def sample(self, n: int, patterns: Sequence[str] = PATTERNS) -> list[Sample]:
        """Up to ``n`` distinct samples, patterns in turn; fewer when the graph runs out of new ones."""
        unknown = set(patterns) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown pattern(s) {sorted(unknown)}; choose from {PATTERNS}")
        active = list(dict.fromkeys(patterns))
        out: list[Sample] = []
        seen: set[str] = set()
        streak: Counter[str] = Counter()
        turn = 0
        while len(out) < n and active:
            pattern = active[turn % len(active)]
            sample = getattr(self, pattern)()
            if sample is None:
                self.exhausted.append(pattern)
                active.remove(pattern)
                continue
            turn += 1
            self._use(sample)  # also on a repeat, so the next pick moves on
            if sample.key in seen:
                streak[pattern] += 1
                if streak[pattern] >= _DUPLICATE_STREAK:
                    self.exhausted.append(pattern)
                    active.remove(pattern)
                continue
            streak[pattern] = 0
            seen.add(sample.key)
            out.append(sample)
            self._touch(sample)
        return out

    def _use(self, sample: Sample) -> None:
        for triple in sample.triples:
            self.relation_uses[triple[1]] += 1
            self.triple_uses[triple] += 1
        for pair in {(h, r) for h, r, _ in sample.triples}:
            self.pair_uses[pair] += 1
        for entity in sample.entities:
            self.entity_uses[entity] += 1
        anchor = sample.slots.get("entity") or sample.slots.get("middle")
        if anchor is not None:
            self.anchor_uses[(sample.pattern, anchor)] += 1

    def _touch(self, sample: Sample) -> None:
        self.by_pattern[sample.pattern] += 1
        self._touched_triples.update(sample.triples)
        self._touched_relations.update(r for _, r, _ in sample.triples)
        self._touched_entities.update(e for e in sample.entities if e not in self.index.literal)

    def coverage(self) -> dict[str, Any]:
        """Share of the graph's entities (literal values excluded), relations and triples the samples touched."""

        def share(touched: int, total: int) -> dict[str, Any]:
            return {"touched": touched, "total": total, "share": round(touched / total, 4) if total else 0.0}

        return {
            "entities": share(len(self._touched_entities), len(self.index.entities)),
            "relations": share(len(self._touched_relations), len(self.index.heads)),
            "triples": share(len(self._touched_triples), self.G.number_of_edges()),
            "by_pattern": dict(self.by_pattern),
            "exhausted": self.exhausted,
        }


def _has_path_through(G: nx.MultiDiGraph, middle: str) -> bool:
    """Whether some a -> middle -> c exists with a, middle, c distinct."""
    preds = {a for a in G.pred[middle] if a != middle}
    succs = {c for c in G.succ[middle] if c != middle}
    return bool(preds) and bool(succs) and not (len(preds) == 1 and preds == succs)
