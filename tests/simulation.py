"""A seeded simulation of the consumer group (issue 18), in the spirit of FoundationDB's simulator
and TigerBeetle's VOPR: the REAL membership state machine (consumer/membership.py), and the real
start decision (consumer/offsets.plan_start) inside it, driven against a fake broker, a fake
group coordinator and a fake database by a scheduler that injects faults at every step. After
every step the invariants are checked; a failure names its seed and the command that replays it:

    python -m tests.simulation --seed 1234 -v        # one seed, every step printed
    python -m tests.simulation --seeds 100000        # many (make simulate SEEDS=100000)

What is real and what is modelled (docs/guarantees-state-machine.md says more):

* real: every decision of consumer/membership.py (setup, seek, pause, resume, accept, drop,
  advance moves, rewind, fence, outage waits, blocked rechecks, the start of a group without rows);
* modelled: the member's main loop (`SimMember.run` follows consumer/processor.py's `run`,
  `_apply_rebalance`, `_prepare`, `_complete_inflight` and `_persist` step by step, with a yield at
  every point where the real one does I/O), kafka-python's fetch positions and pause flags, the
  cooperative coordinator (revoke first, assign in a later round), PostgreSQL's conditional
  advance and its constraints (one row per coordinate, one stored row per transaction id);
* the rule: an account's every third stored transaction raises an alert, computed from a cache
  of per-account counts loaded from the "database" on a miss, as the real account cache is. It
  stands in for consumer/rules.py: it is a function of the stored events in stream order, which
  is the property the pipeline must keep, and it goes wrong exactly when a cache survives a
  rewind or a drop, or an event is stored, skipped or counted twice.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from consumer.membership import (
    MIRROR_FAILED,
    Action,
    Answer,
    ClearCache,
    CreateStored,
    Forget,
    Membership,
    Mirror,
    Pause,
    ReadStored,
    Resume,
    Seek,
)
from consumer.offsets import Stored

POLL_MAX = 4  # records per partition per poll
ALERT_EVERY = 3  # the modelled rule: an account's every third stored transaction
Step = Generator[None, None, Any]


class Violation(AssertionError):
    """An invariant broke."""


# ---------------------------------------------------------------------- the broker


@dataclass(frozen=True, slots=True)
class Msg:
    txn_id: str
    account: str


@dataclass
class Incarnation:
    """One life of the topic: its id, its partitions' logs and log starts."""

    topic_id: uuid.UUID
    logs: dict[int, list[Msg]]
    log_start: dict[int, int]
    deleted_unread: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))


class Broker:
    def __init__(self, rng: random.Random, partitions: int) -> None:
        self.rng = rng
        self.incarnations: list[Incarnation] = []
        self.sent = 0
        self.committed: dict[int, int] = {}  # Kafka's committed offsets (the mirror)
        self.recreate(partitions)

    @property
    def now(self) -> Incarnation:
        return self.incarnations[-1]

    def recreate(self, partitions: int) -> None:
        tid = uuid.UUID(int=self.rng.getrandbits(128) | 1)
        self.incarnations.append(
            Incarnation(tid, {p: [] for p in range(partitions)}, dict.fromkeys(range(partitions), 0))
        )
        self.committed = {}

    def produce(self, n: int) -> None:
        inc = self.now
        for _ in range(n):
            p = self.rng.randrange(len(inc.logs))
            account = f"p{p}-a{self.rng.randrange(3)}"  # keyed: an account lives on one partition
            if self.sent and self.rng.random() < 0.05:
                txn_id = f"t{self.rng.randrange(self.sent)}"  # a reused id (a client's retry, a bug)
            else:
                txn_id = f"t{self.sent}"
            self.sent += 1
            inc.logs[p].append(Msg(txn_id, account))

    def add_partition(self) -> None:
        inc = self.now
        p = len(inc.logs)
        inc.logs[p], inc.log_start[p] = [], 0

    def bounds(self, p: int) -> tuple[int, int]:
        inc = self.now
        return inc.log_start[p], len(inc.logs[p])


# ---------------------------------------------------------------------- the database


class Outage(Exception):
    pass


class Fenced(Exception):
    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions


class StoredElsewhere(Exception):
    def __init__(self, ids: set[str]) -> None:
        self.ids = ids


class CommitUnknown(Outage):
    """The COMMIT was sent and the connection died before its answer."""

    def __init__(self, xid: int, result: int) -> None:
        self.xid, self.result = xid, result


@dataclass(frozen=True, slots=True)
class Row:
    kind: str  # "stored" or "rejected"
    txn_id: str
    account: str
    alert: bool
    writer: str


@dataclass
class Batch:
    spans: dict[int, tuple[int, int]]
    items: list[tuple[int, int, Msg, bool, bool]]  # partition, offset, message, rejected, alert
    moves: dict[int, tuple[int, int]] = field(default_factory=dict)
    topic_id: uuid.UUID | None = None

    def accounts(self) -> set[str]:
        return {m.account for _p, _o, m, rej, _a in self.items if not rej}


class Database:
    def __init__(self) -> None:
        self.down = False
        self.offsets: dict[int, Stored] = {}
        self.rows: dict[tuple[uuid.UUID, int, int], Row] = {}
        self.ids: dict[str, tuple[uuid.UUID, int, int]] = {}  # stored (not rejected) ids
        self.counts: Counter[tuple[uuid.UUID, str]] = Counter()  # stored transactions per account
        self.xids: dict[int, bool] = {}  # transaction id -> committed
        self.final_next: dict[tuple[uuid.UUID, int], int] = {}  # offsets rows an operator deleted
        self.version = 0  # bumped by every change: the invariants are checked when it moves

    def check(self) -> None:
        if self.down:
            raise Outage()

    def read(self, parts: Iterable[int]) -> dict[int, Stored]:
        self.check()
        return {p: self.offsets[p] for p in parts if p in self.offsets}

    def create(self, starts: dict[int, int], topic_id: uuid.UUID | None) -> None:
        self.check()
        for p, n in starts.items():
            self.offsets.setdefault(p, Stored(n, topic_id))
        self.version += 1

    def write(self, batch: Batch, writer: str, lose_commit: bool) -> int:
        """One transaction: the conditional advance, then the rows; all or nothing."""
        self.check()
        xid = len(self.xids) + 1
        self.xids[xid] = False
        fenced = set()
        for p, (start, _end) in batch.moves.items():
            st = self.offsets.get(p)
            other_incarnation = st is not None and st.topic_id not in (None, batch.topic_id)
            if st is None or st.next_offset != start or other_incarnation:
                fenced.add(p)
        if fenced:
            raise Fenced(fenced)
        tid = batch.topic_id
        assert tid is not None
        elsewhere = {m.txn_id for p, o, m, rej, _a in batch.items if not rej and m.txn_id in self.ids}
        if elsewhere:
            raise StoredElsewhere(elsewhere)
        for p, o, m, rej, alert in batch.items:
            if (tid, p, o) in self.rows:
                raise Violation(f"offset {p}/{o} of incarnation {tid} stored twice (by {writer})")
            self.rows[(tid, p, o)] = Row("rejected" if rej else "stored", m.txn_id, m.account, alert, writer)
            if not rej:
                self.ids[m.txn_id] = (tid, p, o)
                self.counts[(tid, m.account)] += 1
        for p, (_start, end) in batch.moves.items():
            self.offsets[p] = Stored(end, self.offsets[p].topic_id)
        self.xids[xid] = True
        self.version += 1
        if lose_commit:
            raise CommitUnknown(xid, len(batch.items))
        return len(batch.items)

    def txid_status(self, xid: int) -> bool:
        self.check()
        return self.xids[xid]

    def delete_offsets(self, parts: Iterable[int]) -> None:
        """The operator's recovery after a topic was recreated: start the group afresh."""
        self.version += 1
        for p in list(parts):
            st = self.offsets.pop(p, None)
            if st is not None and st.topic_id is not None:
                self.final_next[(st.topic_id, p)] = st.next_offset


# ---------------------------------------------------------------------- the coordinator


class Coordinator:
    """Cooperative incremental rebalancing: partitions that move are revoked first; they are
    assigned in a later round (`settle`), never owned by two members at once in its view."""

    def __init__(self) -> None:
        self.members: dict[str, SimMember] = {}
        self.owner: dict[int, str | None] = {}

    def target(self, partitions: int) -> dict[int, str]:
        names = sorted(self.members)
        return {p: names[p % len(names)] for p in range(partitions)} if names else {}

    def revoke_round(self, partitions: int) -> None:
        target = self.target(partitions)
        for p in range(partitions):
            self.owner.setdefault(p, None)
        by_member: dict[str, list[int]] = defaultdict(list)
        for p, o in self.owner.items():
            if o is not None and (o not in self.members or target.get(p) != o):
                if o in self.members:
                    by_member[o].append(p)
                self.owner[p] = None
        for name, ps in by_member.items():
            self.members[name].deliver("revoked", ps)

    def settle(self, partitions: int) -> None:
        self.revoke_round(partitions)
        target = self.target(partitions)
        by_member: dict[str, list[int]] = defaultdict(list)
        for p in range(partitions):
            if self.owner.get(p) is None and p in target:
                self.owner[p] = target[p]
                by_member[target[p]].append(p)
        for name, ps in by_member.items():
            self.members[name].deliver("assigned", ps)

    def join(self, member: SimMember) -> None:
        self.members[member.name] = member

    def leave(self, name: str, *, tell: bool) -> None:
        """A member crashed (`tell` False: it is gone) or was dropped for silence (its
        partitions are 'lost' to it, it finds out when it next runs)."""
        member = self.members.pop(name)
        ps = [p for p, o in self.owner.items() if o == name]
        for p in ps:
            self.owner[p] = None
        if tell and ps:
            member.deliver("lost", ps)


# ---------------------------------------------------------------------- a member


class Rewound(Exception):
    pass


class SimMember:
    """One consumer process: the real Membership, kafka-python's state as far as it matters, and
    the processor's loop as a generator (one yield per I/O point, so faults interleave)."""

    def __init__(self, name: str, sim: Simulation) -> None:
        self.name, self.sim = name, sim
        self.m = Membership()
        self.queue: list[tuple[str, tuple[int, ...]]] = []  # what the listener put on the queue
        self.assignment: set[int] = set()  # kafka-python's view, changed on its IO thread
        self.paused: set[int] = set()
        self.pos: dict[int, int] = {}
        # (incarnation, account) -> stored transactions: the account cache. The topic's incarnation
        # is part of an account's identity (issue 18 item 4), as it is of offsets.
        self.cache: dict[tuple[uuid.UUID, str], int] = {}
        self.facts: set[str] = set()  # ids stored from other messages: reject these
        self.inflight: Batch | None = None
        self.written: tuple[str, Any] | None = None  # the writer thread's result, when it ran
        self.stored = 0  # the summary's count
        self.completing: Batch | None = None
        self.gen = self.run()

    # ---------------------------------------------------------------- kafka-python

    def deliver(self, how: str, ps: Iterable[int]) -> None:
        ps = tuple(sorted(ps))
        if how == "assigned":
            self.assignment |= set(ps)
            for p in ps:
                self.paused.discard(p)
                self.pos.pop(p, None)
        else:
            self.assignment -= set(ps)
            for p in ps:
                self.paused.discard(p)
                self.pos.pop(p, None)
        self.queue.append((how, ps))

    def poll(self) -> dict[int, list[tuple[int, Msg]]]:
        b = self.sim.broker
        out = {}
        for p in sorted(self.assignment - self.paused):
            start, end = b.bounds(p)
            pos = self.pos.get(p, b.committed.get(p, start))
            if pos < start or pos > end:
                pos = start  # auto_offset_reset="earliest"
            recs = [(o, b.now.logs[p][o]) for o in range(pos, min(end, pos + POLL_MAX))]
            self.pos[p] = pos + len(recs)
            if recs:
                out[p] = recs
        return out

    def execute(self, actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, Seek):
                if a.partition in self.assignment:  # else kafka-python raises; the shell skips it
                    self.pos[a.partition] = a.offset
            elif isinstance(a, Pause):
                self.paused |= set(a.partitions) & self.assignment
            elif isinstance(a, Resume):
                self.paused -= set(a.partitions)
            elif isinstance(a, Mirror):
                # Kafka refuses a commit from a member outside the group's current generation
                # (modelled: not the coordinator's owner of the partition), and an async commit
                # can fail anyway (the coordinator moved): the failure is queued, as the shell's
                # commit callback does.
                coord = self.sim.coord
                accepted = coord.members.get(self.name) is self and self.sim.rng.random() >= 0.1
                refused = []
                for p, n in a.offsets:
                    if accepted and coord.owner.get(p) == self.name:
                        self.sim.broker.committed[p] = n
                    else:
                        refused.append(p)
                if refused:
                    self.queue.append((MIRROR_FAILED, tuple(refused)))
            elif isinstance(a, Forget):
                self.cache = {
                    k: v for k, v in self.cache.items() if int(k[1][1 : k[1].index("-")]) not in a.partitions
                }
            elif isinstance(a, ClearCache):
                self.cache.clear()
            else:
                raise AssertionError(a)

    def sync(self) -> None:
        queued, self.queue = self.queue, []
        for how, ps in queued:
            if how == MIRROR_FAILED:
                self.m.mirror_failed(ps)
            else:
                self.execute(self.m.assign(ps) if how == "assigned" else self.m.revoke(ps))

    # ---------------------------------------------------------------- the processor's loop

    def run(self) -> Step:
        while True:
            polled = self.poll()
            self.m.polled(polled)
            yield
            if not (yield from self.apply_rebalance()):
                continue
            self.sync()
            self.execute(self.m.topic_seen(self.sim.broker.now.topic_id))
            spans = {p: (recs[0][0], recs[-1][0]) for p, recs in polled.items()}
            accepted, actions = self.m.accept(spans, self.sim.broker.now.topic_id)
            self.execute(actions)
            if not accepted:
                if (yield from self.complete_inflight()) == "done":
                    yield from self.verify_idle()
                continue
            rebalances = self.m.rebalances
            batch = yield from self.prepare({p: polled[p] for p in accepted}, accepted)
            if batch is None:
                continue
            if (yield from self.complete_inflight()) == "rewound":
                continue
            self.sync()
            if self.m.rebalances != rebalances:
                self.rewind()
                continue
            self.inflight, self.written = batch, None

    def apply_rebalance(self) -> Step:
        self.sync()
        if self.m.dropping:
            yield from self.complete_inflight()
            self.execute(self.m.drop())
        self.sync()
        self.execute(self.m.mirror_due())
        for a in self.m.setup_due(self.sim.clock):
            assert isinstance(a, ReadStored)
            if not (yield from self.setup(a.partitions)):
                self.m.read_failed(a.partitions)
                return False
        return True

    def verify_idle(self) -> Step:
        self.sync()
        parts = self.m.verify_due(self.sim.clock)
        if parts:
            stored = yield from self.db_call(lambda: self.sim.db.read(parts))
            self.sync()
            self.execute(self.m.verified(stored))

    def setup(self, parts: tuple[int, ...]) -> Step:
        b = self.sim.broker
        bounds = {p: b.bounds(p) for p in parts}
        topic_id = b.now.topic_id
        stored = yield from self.db_call(lambda: self.sim.db.read(parts))

        def answer(p: int, st: Stored | None) -> Answer:
            return Answer(st, *bounds[p])

        self.sync()
        actions = self.m.answered({p: answer(p, stored.get(p)) for p in parts}, topic_id, self.sim.clock)
        self.execute(a for a in actions if not isinstance(a, CreateStored))
        create = next((a for a in actions if isinstance(a, CreateStored)), None)
        if create is not None:
            starts, tid = dict(create.starts), create.topic_id

            def record() -> dict[int, Stored]:
                self.sim.db.create(starts, tid)
                return self.sim.db.read(starts)

            created = yield from self.db_call(record)
            self.sync()
            again = {p: answer(p, created.get(p)) for p in starts}
            self.execute(self.m.answered(again, topic_id, self.sim.clock))
        return True

    def db_call(self, fn: Callable[[], Any]) -> Step:
        """DbRetry.call: an outage is waited out while keeping the membership."""
        while True:
            try:
                return fn()
            except Outage:
                yield from self.keep_membership()

    def keep_membership(self) -> Step:
        self.sync()
        self.execute(self.m.outage_began())
        yield
        self.poll()  # paused, but kafka-python runs the rebalance protocol in poll()
        self.sync()
        self.execute(self.m.outage_ended())

    def prepare(self, records: dict[int, list[tuple[int, Msg]]], spans: dict[int, tuple[int, int]]) -> Step:
        rebalances = self.m.rebalances
        tid = self.m.batch_topic_id(spans)
        assert tid is not None
        accounts = {(tid, m.account) for recs in records.values() for _o, m in recs}
        missing = accounts - self.cache.keys()
        if missing:
            inflight = self.inflight
            if (
                inflight is not None
                and not missing.isdisjoint((inflight.topic_id, a) for a in inflight.accounts())
                and (yield from self.complete_inflight()) != "done"
            ):
                return None
            counts = yield from self.db_call(lambda: {a: self.sim.db.counts[a] for a in missing})
            self.sync()
            if self.m.rebalances != rebalances:
                if (yield from self.complete_inflight()) == "done":
                    self.rewind()
                return None
            self.cache.update(counts)
        items = []
        seen: set[str] = set()
        for p in sorted(records):
            for o, msg in records[p]:
                if msg.txn_id in self.facts or msg.txn_id in seen:
                    items.append((p, o, msg, True, False))
                    continue
                seen.add(msg.txn_id)
                self.cache[(tid, msg.account)] += 1
                items.append((p, o, msg, False, self.cache[(tid, msg.account)] % ALERT_EVERY == 0))
        batch = Batch(spans, items, topic_id=tid)
        batch.moves = self.m.prepared(spans)
        return batch

    def writer_runs(self) -> None:
        """The writer thread writes the batch in flight (it may do so at any step)."""
        if self.inflight is None or self.written is not None:
            return
        self.written = self.attempt(self.inflight)

    def attempt(self, batch: Batch) -> tuple[str, Any]:
        try:
            lose = self.sim.rng.random() < self.sim.p_lose_commit
            return ("ok", self.sim.db.write(batch, self.name, lose))
        except Exception as exc:
            return ("error", exc)

    def complete_inflight(self) -> Step:
        batch = self.inflight
        if batch is None:
            return "done"
        self.writer_runs()
        self.inflight, self.completing = None, batch
        try:
            return (yield from self._complete(batch))
        finally:
            self.completing = None

    def _complete(self, batch: Batch) -> Step:
        assert self.written is not None
        how, value = self.written
        while how == "error":
            exc = value
            if isinstance(exc, Fenced):
                self.execute(self.m.fenced(exc.partitions))
                return "rewound"
            if isinstance(exc, StoredElsewhere):
                self.facts |= exc.ids
                self.rewind()
                return "rewound"
            if isinstance(exc, CommitUnknown) and self.sim.resolve_lost_commits:
                yield from self.keep_membership()
                committed = yield from self.db_call(functools.partial(self.sim.db.txid_status, exc.xid))
                if committed:
                    how, value = "ok", exc.result
                    break
            assert isinstance(exc, Outage), exc
            yield from self.keep_membership()
            how, value = self.attempt(batch)
        self.stored += value
        self.execute(self.m.stored(batch.moves))
        return "done"

    def rewind(self) -> None:
        self.sync()
        self.execute(self.m.rewind())


# ---------------------------------------------------------------------- the scheduler


class Simulation:
    def __init__(
        self, seed: int, *, steps: int = 300, verbose: bool = False, resolve_lost_commits: bool = True
    ) -> None:
        self.seed, self.steps, self.verbose = seed, steps, verbose
        self.rng = random.Random(seed)
        self.resolve_lost_commits = resolve_lost_commits
        self.clock = 0.0
        self.broker = Broker(self.rng, self.rng.randint(1, 4))
        self.db = Database()
        self.coord = Coordinator()
        self.p_lose_commit = self.rng.choice([0.0, 0.02, 0.1])
        self.names = 0
        self.frozen: dict[str, int] = {}  # dropped for silence: rejoins at this step
        self.zombies: dict[str, SimMember] = {}  # dropped for silence, still running
        for _ in range(self.rng.randint(1, 3)):
            self.start_member()
        self.coord.settle(self.partitions)
        self.log: list[str] = []
        self.checked = -1

    @property
    def partitions(self) -> int:
        return len(self.broker.now.logs)

    def start_member(self) -> SimMember:
        self.names += 1
        member = SimMember(f"m{self.names}", self)
        self.coord.join(member)
        return member

    def say(self, what: str) -> None:
        if self.verbose:
            print(f"  [{self.clock:5.0f}] {what}")

    def live(self) -> list[SimMember]:
        return [self.coord.members[n] for n in sorted(self.coord.members)] + [
            m for n, m in sorted(self.zombies.items())
        ]

    def step(self, faults: bool) -> None:
        rng = self.rng
        self.clock += 1.0
        r = rng.random()
        if faults and r < 0.03:
            self.db.down = not self.db.down
            self.say(f"database {'down' if self.db.down else 'up'}")
        elif faults and r < 0.05 and self.coord.members:
            name = rng.choice(sorted(self.coord.members))
            self.coord.leave(name, tell=False)
            self.zombies.pop(name, None)
            self.say(f"{name} crashes")
            self.coord.revoke_round(self.partitions)
        elif faults and r < 0.07 and self.coord.members:
            name = rng.choice(sorted(self.coord.members))
            member = self.coord.members[name]
            self.coord.leave(name, tell=True)
            self.zombies[name] = member
            self.frozen[name] = int(self.clock) + rng.randint(1, 20)
            self.say(f"{name} frozen: dropped from the group, still running")
            self.coord.revoke_round(self.partitions)
        elif faults and r < 0.09 and len(self.coord.members) < 4:
            self.say(f"{self.start_member().name} starts")
            self.coord.revoke_round(self.partitions)
        elif faults and r < 0.095:
            self.broker.add_partition()
            self.say(f"partition {self.partitions - 1} added")
            self.coord.revoke_round(self.partitions)
        elif faults and r < 0.10:
            self.broker.recreate(self.partitions)
            self.say(f"topic deleted and recreated ({self.broker.now.topic_id})")
        elif faults and r < 0.11:
            self.retention()
        elif faults and r < 0.12:
            self.operator_unblocks()
        elif r < 0.25:
            self.coord.settle(self.partitions)
        elif r < 0.40:
            self.broker.produce(rng.randint(1, 6))
        elif r < 0.50:
            members = self.live()
            if members:
                rng.choice(members).writer_runs()
        else:
            members = self.live()
            if members:
                member = rng.choice(members)
                next(member.gen)
        for name, at in list(self.frozen.items()):
            if at <= self.clock and name in self.zombies:
                member = self.zombies.pop(name)
                del self.frozen[name]
                self.coord.join(member)
                self.say(f"{name} rejoins")
        self.check()

    def operator_unblocks(self) -> None:
        """README's recovery for a recreated topic: delete the group's rows of the old one."""
        now = self.broker.now.topic_id
        stale = [p for p, st in self.db.offsets.items() if st.topic_id not in (None, now)]
        if stale:
            self.db.delete_offsets(stale)
            self.say(f"operator deletes the group's offsets of {stale} (topic recreated)")

    def retention(self) -> None:
        inc = self.broker.now
        p = self.rng.randrange(self.partitions)
        start, end = inc.log_start[p], len(inc.logs[p])
        if end > start:
            new = self.rng.randint(start, end)
            for o in range(start, new):
                if (inc.topic_id, p, o) not in self.db.rows:
                    inc.deleted_unread[p].add(o)
            self.db.version += 1
            inc.log_start[p] = new
            self.say(f"retention deletes {p}/{start}..{new - 1}")

    # ---------------------------------------------------------------- invariants

    def check(self) -> None:
        db = self.db
        if db.version == self.checked and not self.verbose:
            return  # nothing stored, created or deleted since the last check
        self.checked = db.version
        for inc in self.broker.incarnations:
            for p, log in inc.logs.items():
                st = db.offsets.get(p)
                if st is not None and st.topic_id == inc.topic_id:
                    nxt = st.next_offset
                else:
                    nxt = db.final_next.get((inc.topic_id, p), 0)
                for o in range(nxt):
                    row = db.rows.get((inc.topic_id, p, o))
                    if row is None and o not in inc.deleted_unread[p]:
                        raise Violation(
                            f"offset {p}/{o} of incarnation {inc.topic_id} is below the stored offset "
                            f"{nxt} but neither stored nor rejected (skipped)"
                        )
                    if row is not None and (o >= len(log) or log[o].txn_id != row.txn_id):
                        raise Violation(f"row {p}/{o} holds {row.txn_id}, not the message at that position")
        stored_ids = Counter(r.txn_id for r in db.rows.values() if r.kind == "stored")
        twice = [i for i, n in stored_ids.items() if n > 1]
        if twice:
            raise Violation(f"transaction ids stored twice: {twice[:5]}")
        expected = self.clean_pass_alerts()
        got = {k for k, r in db.rows.items() if r.alert}
        if expected != got:
            raise Violation(
                f"alerts differ from one clean pass over the stored events: missing {sorted(expected - got)[:3]}, "
                f"extra {sorted(got - expected)[:3]}"
            )
        for member in self.coord.members.values():
            open_ = {
                (b.topic_id, p, o) for b in (member.inflight, member.completing) if b for p, o, *_ in b.items
            }
            mine = sum(1 for k, r in db.rows.items() if r.writer == member.name and k not in open_)
            if member.stored != mine:
                raise Violation(f"{member.name} counts {member.stored} messages stored, it stored {mine}")

    def clean_pass_alerts(self) -> set[tuple[uuid.UUID, int, int]]:
        counts: Counter[tuple[uuid.UUID, str]] = Counter()
        out = set()
        order = {inc.topic_id: i for i, inc in enumerate(self.broker.incarnations)}
        # Stream order per account: accounts are keyed to one partition of each incarnation.
        for k in sorted(self.db.rows, key=lambda k: (order[k[0]], k[1], k[2])):
            row = self.db.rows[k]
            if row.kind != "stored":
                continue
            counts[(k[0], row.account)] += 1
            if counts[(k[0], row.account)] % ALERT_EVERY == 0:
                out.add(k)
        return out

    # ---------------------------------------------------------------- a run

    def run(self) -> None:
        for _ in range(self.steps):
            self.step(faults=True)
        self.heal()

    def heal(self) -> None:
        """No more faults: every member rejoins, the database comes back, an operator unblocks a
        recreated topic; then everything produced must be stored or rejected (liveness)."""
        self.say("healing")
        self.db.down = False
        for name in list(self.zombies):
            self.coord.join(self.zombies.pop(name))
        self.frozen.clear()
        if not self.coord.members:
            self.start_member()
        self.coord.settle(self.partitions)
        for i in range(4000):
            if self.done():
                return
            if i % 50 == 0:
                self.operator_unblocks()
            self.clock += 1.0
            if self.rng.random() < 0.1:
                self.coord.settle(self.partitions)
            for member in self.live():
                next(member.gen)
                member.writer_runs()
            self.check()
        left = {p: (self.db.offsets.get(p), self.broker.bounds(p)) for p in range(self.partitions)}
        raise Violation(
            f"not everything was stored, or mirrored to Kafka, after healing (stuck): {left}, "
            f"Kafka's committed offsets {self.broker.committed}"
        )

    def done(self) -> bool:
        """Every message of the topic stored or rejected, or deleted by retention unread."""
        inc = self.broker.now
        for p, log in inc.logs.items():
            for o in range(len(log)):
                if (inc.topic_id, p, o) not in self.db.rows and o not in inc.deleted_unread[p]:
                    return False
        if any(m.inflight is not None for m in self.live()):
            return False
        # Lag tools (Kafka's committed offsets, the mirror) show nothing left once all is stored.
        return all(
            self.broker.committed.get(p) == st.next_offset
            for p, st in self.db.offsets.items()
            if st.topic_id == inc.topic_id
        )


def run_seed(
    seed: int, *, verbose: bool = False, steps: int = 300, resolve_lost_commits: bool = True
) -> None:
    """Run one seed; raise Violation naming the seed and how to replay it."""
    sim = Simulation(seed, steps=steps, verbose=verbose, resolve_lost_commits=resolve_lost_commits)
    try:
        sim.run()
    except Violation as exc:
        raise Violation(
            f"seed {seed}: {exc}\n  replay: .venv/bin/python -m tests.simulation --seed {seed} -v"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds, from --first")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300, help="faulty steps per seed (then it heals)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every step and the machine's log")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="      %(message)s")
    else:
        logging.getLogger("consumer").setLevel(logging.CRITICAL)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.perf_counter()
    failed = 0
    for seed in seeds:
        try:
            run_seed(seed, verbose=args.verbose, steps=args.steps)
        except Violation as exc:
            failed += 1
            print(exc, file=sys.stderr)
            if failed >= 10:
                break
    n = len(seeds)
    print(f"{n - failed} of {n} seeds passed in {time.perf_counter() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
