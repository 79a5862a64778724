"""Group membership and offset bookkeeping as a sans-I/O state machine (events in, actions out).

Like h11's protocol core, this module does no I/O and reads no clock: kafka-python and
PostgreSQL live in thin shells (consumer/group.py, consumer/processor.py) that turn what
happened into events and carry out the actions returned. The same code runs, unchanged, under
the seeded simulation in tests/simulation.py; docs/guarantees-state-machine.md explains both.

Partitions are plain ints of the one topic the group reads. Offsets are Kafka offsets of the
next message. A partition goes through these states:

    assigned -> WAITING --ReadStored--> READING --answer--> OWNED (or BLOCKED, rechecked later)
    revoked/lost: out of WAITING/READING/BLOCKED at once; OWNED -> dropping, dropped (`drop`)
    once the batch in flight is stored or fenced (the caller's business: it owns that batch)

Every decision is a function of the events, never of when a poll returned or how records were
grouped. Two rules carry the exactly-once argument:

* A record is accepted only at the position this member expects, and only if no seek of its
  partition happened since it was polled (`polled`/`accept`): a rewind, a fence or a wait that
  kept the membership re-reads from the stored offset; records fetched before are never
  evaluated (issue 18, item 1: they used to be taken for a retention gap, and skipped).
* A batch moves a partition's stored offset from where this member last stored it (`prepared`
  returns the moves; consumer/offsets.advance applies them conditionally): whoever writes after
  a takeover finds the offset moved and is fenced.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from consumer.offsets import StartKind, Stored, plan_start

log = logging.getLogger("consumer")

BLOCKED_RECHECK_S = 60.0  # how often a partition we refuse to read is looked at again
# How often an idle partition's stored offset is read again until a batch of ours confirms it
# (`verify_due`): the previous owner's last batch may commit after we read it at setup.
VERIFY_IDLE_S = 30.0
MIRROR_FAILED = "mirror failed"  # the shell's event for a refused Mirror (`mirror_failed`)


# ---------------------------------------------------------------------- actions (out)


@dataclass(frozen=True, slots=True)
class Pause:
    """Fetch nothing from these partitions."""

    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Resume:
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Seek:
    """Read `partition` from `offset` next. Records fetched before are void (see `polled`)."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ReadStored:
    """Read these partitions' stored offsets and log bounds; answer with `answered` (or
    `read_failed` when the broker or the database could not be asked)."""

    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CreateStored:
    """These partitions have no stored offset: record these starts ({partition: offset}) under
    `topic_id`, keeping a row another member made meanwhile, then answer with `answered`."""

    starts: tuple[tuple[int, int], ...]
    topic_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Mirror:
    """Write these stored offsets to Kafka's committed offsets (for lag tools only)."""

    offsets: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Forget:
    """These partitions are no longer ours: drop their accounts from memory."""

    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClearCache:
    """Everything prepared but not stored is void: empty the account cache (a rewind)."""


Action = Pause | Resume | Seek | ReadStored | CreateStored | Mirror | Forget | ClearCache


# ---------------------------------------------------------------------- events (in)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the shell learnt for one partition of a `ReadStored`: its stored offset (None: no
    row) and the broker's log bounds."""

    stored: Stored | None
    log_start: int
    log_end: int


class Phase(enum.Enum):
    WAITING = "waiting"  # assigned; its stored offset is to be read
    READING = "reading"  # ReadStored (or CreateStored) issued, no answer yet
    OWNED = "owned"  # set up: read from `position`
    BLOCKED = "blocked"  # refused to read (recreated or truncated topic) until `recheck_at`


@dataclass(slots=True)
class Owned:
    """A partition this member reads."""

    committed: int  # what consumer_offsets holds, as far as this member knows
    expected: int  # what it will hold once every batch prepared so far is stored
    position: int  # the next offset to accept
    topic_id: uuid.UUID | None  # the topic's incarnation this partition was set up under


@dataclass(slots=True)
class Membership:
    """One member's view of its partitions. Not thread-safe: the shell feeds it from one thread
    (the rebalance listener only queues events, consumer/group.py)."""

    assigned: set[int] = field(default_factory=set)  # as the group last told us
    phase: dict[int, Phase] = field(default_factory=dict)  # of every assigned partition
    owned: dict[int, Owned] = field(default_factory=dict)
    recheck_at: dict[int, float] = field(default_factory=dict)  # BLOCKED partitions
    dropping: set[int] = field(default_factory=set)  # lost while owned: drop after the batch in flight
    mirror_of: dict[int, int] = field(default_factory=dict)  # offsets this member stored, while owned
    unmirrored: set[int] = field(default_factory=set)  # partitions whose last Mirror failed
    verify_at: dict[int, float] = field(default_factory=dict)  # owned, not yet confirmed by a batch
    rebalances: int = 0  # bumped by every assignment change
    _seeks: dict[int, int] = field(default_factory=dict)  # per partition, bumped by every seek
    _polled_at: dict[int, int] = field(default_factory=dict)  # _seeks when the last poll returned

    # ------------------------------------------------------------------ the group

    def assign(self, partitions: Iterable[int]) -> list[Action]:
        """Gained partitions: nothing is fetched from them until their stored offset is read."""
        ps = tuple(sorted(set(partitions)))
        self.rebalances += 1
        for p in ps:
            self.assigned.add(p)
            self.phase[p] = Phase.WAITING
            self.recheck_at.pop(p, None)
        return [Pause(ps)] if ps else []

    def revoke(self, partitions: Iterable[int]) -> list[Action]:
        """Revoked or lost: never read again; owned ones are dropped once the batch in flight
        is stored or fenced (`drop`)."""
        self.rebalances += 1
        for p in set(partitions):
            self.assigned.discard(p)
            self.phase.pop(p, None)
            self.recheck_at.pop(p, None)
            if p in self.owned:
                self.dropping.add(p)
        return []

    def drop(self) -> list[Action]:
        """Forget the partitions lost; the caller has completed the batch in flight."""
        drops, self.dropping = tuple(sorted(self.dropping)), set()
        for p in drops:
            self.owned.pop(p, None)
            self.mirror_of.pop(p, None)
            self.unmirrored.discard(p)
            self.verify_at.pop(p, None)
            if p in self.assigned and self.phase.get(p) is Phase.OWNED:  # pragma: no cover - defensive
                self.phase[p] = Phase.WAITING
        return [Forget(drops)] if drops else []

    # ------------------------------------------------------------------ setting partitions up

    def setup_due(self, now: float) -> list[Action]:
        """Ask for the stored offsets of partitions gained, fenced, or blocked and due for
        another look. `now` is the shell's monotonic clock (only the BLOCKED recheck uses it)."""
        for p, at in list(self.recheck_at.items()):
            if at <= now:
                del self.recheck_at[p]
                self.phase[p] = Phase.WAITING
        todo = tuple(sorted(p for p, ph in self.phase.items() if ph is Phase.WAITING))
        for p in todo:
            self.phase[p] = Phase.READING
        return [ReadStored(todo)] if todo else []

    def read_failed(self, partitions: Iterable[int]) -> None:
        """The broker or the database could not be asked: ask again next time."""
        for p in partitions:
            if self.phase.get(p) is Phase.READING:
                self.phase[p] = Phase.WAITING

    def answered(
        self, answers: Mapping[int, Answer], topic_id: uuid.UUID | None, now: float, topic: str = ""
    ) -> list[Action]:
        """The stored offsets read: seek and resume what can be read, create rows for what has
        none, block what does not belong to this topic's log. Partitions revoked while the shell
        was asking are left alone."""
        actions: list[Action] = []
        create: dict[int, int] = {}
        resumed: list[int] = []
        for p, a in sorted(answers.items()):
            if self.phase.get(p) is not Phase.READING:
                continue  # revoked while the shell was asking (seeking it crashed the consumer)
            if a.stored is None:
                # A new group, or an operator deleted the group's rows to start afresh: the log
                # start, whatever Kafka's committed offsets (only a mirror) still say.
                create[p] = a.log_start
                continue
            where = f"{topic}/{p}"
            plan = plan_start(a.stored, a.log_start, a.log_end, topic_id, where)
            if plan.kind is StartKind.BLOCKED:
                log.error("%s", plan.message)
                self.phase[p] = Phase.BLOCKED
                self.recheck_at[p] = now + BLOCKED_RECHECK_S
                continue
            if plan.kind is StartKind.SKIP_DELETED:
                log.error("%s", plan.message)
            n = a.stored.next_offset
            self.phase[p] = Phase.OWNED
            self.owned[p] = Owned(committed=n, expected=n, position=plan.offset, topic_id=topic_id)
            self.mirror_of[p] = n
            self.verify_at[p] = now + VERIFY_IDLE_S
            self.dropping.discard(p)
            actions.append(self._seek(p, plan.offset))
            resumed.append(p)
        if create:
            actions.append(CreateStored(tuple(sorted(create.items())), topic_id))
        if resumed:
            # The previous owner's last Mirror may have failed in the rebalance that moved the
            # partition here: with nothing new to read, Kafka's committed offset would stay
            # behind and lag tools would report stored messages as unread, for good.
            actions.append(Mirror(tuple((p, self.mirror_of[p]) for p in resumed)))
            actions.append(Resume(tuple(resumed)))
            log.info("partitions %s resume at %s", resumed, {p: self.owned[p].position for p in resumed})
        return actions

    def set_up_again(self, p: int) -> list[Action]:
        """Forget where `p` stands and read its stored offset again (after a fence or a reset)."""
        self.owned.pop(p, None)
        self.mirror_of.pop(p, None)
        self.unmirrored.discard(p)
        self.verify_at.pop(p, None)
        self.dropping.discard(p)
        if p not in self.assigned:
            return []
        self.phase[p] = Phase.WAITING
        self._seeks[p] = self._seeks.get(p, 0) + 1  # what was polled of it is void
        return [Pause((p,))]

    # ------------------------------------------------------------------ reading

    def polled(self, partitions: Iterable[int]) -> None:
        """A poll returned records of these partitions (fetched after every seek so far)."""
        self._polled_at = {p: self._seeks.get(p, 0) for p in partitions}

    def accept(
        self, spans: Mapping[int, tuple[int, int]], topic_id: uuid.UUID | None = None, topic: str = ""
    ) -> tuple[dict[int, tuple[int, int]], list[Action]]:
        """Of the polled records ({partition: (first, last offset)}), the partitions to evaluate:
        set up, still ours, not sought since the poll, from where we expect them. `topic_id` is
        the topic's id as the client knows it now (None: unknown)."""
        out: dict[int, tuple[int, int]] = {}
        actions: list[Action] = []
        for p, (first, last) in spans.items():
            st = self.owned.get(p)
            if st is None or p in self.dropping:
                continue
            if self._polled_at.get(p, -1) != self._seeks.get(p, 0):
                continue  # sought since the poll (a rewind, a fence, a wait): read again from there
            if topic_id is not None and st.topic_id is not None and topic_id != st.topic_id:
                log.error(
                    "%s/%d: the topic was deleted and recreated under this member (id %s, now %s); "
                    "checking the partition again",
                    topic, p, st.topic_id, topic_id,
                )  # fmt: skip
                actions += self.set_up_again(p)
                continue
            if first < st.position:
                log.error(
                    "%s/%d: Kafka returned offset %d, before the position %d: the client was reset "
                    "(log truncated or topic recreated); checking the partition again",
                    topic, p, first, st.position,
                )  # fmt: skip
                actions += self.set_up_again(p)
                continue
            if first > st.position:
                log.warning(
                    "%s/%d: offsets %d..%d are not in the log (deleted by retention before they were "
                    "read, or transaction markers); continuing at %d",
                    topic, p, st.position, first - 1, first,
                )  # fmt: skip
            st.position = last + 1
            out[p] = (first, last)
        return out, actions

    def topic_seen(self, topic_id: uuid.UUID | None, topic: str = "") -> list[Action]:
        """The client's metadata names the topic's id now: a partition set up under another
        incarnation (the topic was deleted and recreated under this member) is set up again,
        whether or not the new log has reached its position yet."""
        actions: list[Action] = []
        if topic_id is None:
            return actions
        for p, st in sorted(self.owned.items()):
            if st.topic_id is not None and st.topic_id != topic_id and p not in self.dropping:
                log.error(
                    "%s/%d: the topic was deleted and recreated under this member (id %s, now %s); "
                    "checking the partition again",
                    topic, p, st.topic_id, topic_id,
                )  # fmt: skip
                actions += self.set_up_again(p)
        return actions

    def prepared(self, spans: Mapping[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """A batch of these accepted spans is ready: its offset moves {partition: (start, end)},
        each from where the previous batch left the partition."""
        moves = {}
        for p, (_first, last) in spans.items():
            st = self.owned[p]
            moves[p] = (st.expected, last + 1)
            st.expected = last + 1
        return moves

    def batch_topic_id(self, partitions: Iterable[int]) -> uuid.UUID | None:
        """The incarnation a batch of these partitions is written under (they share one)."""
        for p in partitions:
            st = self.owned.get(p)
            if st is not None and st.topic_id is not None:
                return st.topic_id
        return None

    # ------------------------------------------------------------------ batch outcomes

    def stored(self, moves: Mapping[int, tuple[int, int]]) -> list[Action]:
        """A batch with these moves committed: record and mirror them."""
        now = []
        for p, (_start, end) in sorted(moves.items()):
            st = self.owned.get(p)
            if st is not None:
                st.committed = self.mirror_of[p] = end
                self.unmirrored.discard(p)  # this Mirror supersedes a failed one
                self.verify_at.pop(p, None)  # our conditional write found the offset where we knew it
                now.append((p, end))
        return [Mirror(tuple(now))] if now else []

    def verify_due(self, now: float) -> tuple[int, ...]:
        """Idle, nothing in flight: the owned partitions whose stored offset is to be read again
        (`verified`). Taking a partition over, we read its offset while the previous owner's last
        batch may still commit; with nothing new to read no batch of ours would be fenced, and
        Kafka's committed offset (the mirror) would stay behind for good. `now` is the shell's
        monotonic clock."""
        due = tuple(p for p in self.readable() if self.verify_at.get(p, now + 1) <= now)
        for p in due:
            self.verify_at[p] = now + VERIFY_IDLE_S
        return due

    def verified(self, stored: Mapping[int, Stored]) -> list[Action]:
        """The stored offsets `verify_due` asked for: a partition whose offset moved under us
        (another member stored after we read it) is set up again, as a fenced batch's would be."""
        moved = [
            p
            for p, got in sorted(stored.items())
            if p in self.verify_at
            and (st := self.owned.get(p)) is not None
            and st.expected == st.committed  # nothing of ours prepared since (the caller waits)
            and got.next_offset != st.committed
        ]
        if moved:
            log.warning(
                "partitions %s: their stored offsets moved after this member took them over (the "
                "previous owner's last batch committed late); reading them again",
                moved,
            )
        return self.fenced(moved) if moved else []

    def mirror_failed(self, partitions: Iterable[int]) -> None:
        """Kafka refused or lost a Mirror of these partitions (a rebalance, a coordinator move):
        `mirror_due` writes them again."""
        self.unmirrored |= set(partitions) & self.mirror_of.keys()

    def mirror_due(self) -> list[Action]:
        """Mirror again what failed, so lag tools reach zero once everything is stored even when
        no batch follows the failure."""
        due = tuple(sorted((p, self.mirror_of[p]) for p in self.unmirrored if p in self.mirror_of))
        self.unmirrored = set()
        return [Mirror(due)] if due else []

    def rewind(self) -> list[Action]:
        """Rolled back: every owned partition back to its stored offset, the cache emptied.
        Records polled before are void: they are read again."""
        actions: list[Action] = [ClearCache()]
        for p, st in sorted(self.owned.items()):
            st.expected = st.position = st.committed
            if p in self.assigned:
                actions.append(self._seek(p, st.committed))
        return actions

    def fenced(self, partitions: Iterable[int]) -> list[Action]:
        """The batch's offsets of these partitions moved under it: set them up again, rewind."""
        actions: list[Action] = []
        for p in sorted(set(partitions)):
            actions += self.set_up_again(p)
        return actions + self.rewind()

    # ------------------------------------------------------------------ outages

    def outage_began(self) -> list[Action]:
        """Waiting for the database while polling to keep the membership: fetch nothing."""
        return [Pause(tuple(sorted(self.assigned)))] if self.assigned else []

    def outage_ended(self) -> list[Action]:
        """Whatever was fetched meanwhile is read again from where we are."""
        actions: list[Action] = []
        resumed = []
        for p, st in sorted(self.owned.items()):
            if p in self.assigned and p not in self.dropping:
                actions.append(self._seek(p, st.position))
                resumed.append(p)
        if resumed:
            actions.append(Resume(tuple(resumed)))
        return actions

    # ------------------------------------------------------------------ questions

    def readable(self) -> list[int]:
        """Owned partitions still ours."""
        return sorted(p for p in self.owned if p in self.assigned and p not in self.dropping)

    def lag(self, highwater: Mapping[int, int | None]) -> dict[int, int]:
        """Messages not stored yet of each owned partition, from the end offsets last seen."""
        out = {}
        for p, st in self.owned.items():
            end = highwater.get(p)
            if end is not None:
                out[p] = max(0, end - st.committed)
        return out

    def unread(self, ends: Mapping[int, int]) -> dict[int, int] | None:
        """Messages left to read per assigned partition; None when one is not set up yet."""
        if not self.assigned or any(p not in self.owned for p in self.assigned):
            return None
        left = {p: ends[p] - self.owned[p].position for p in self.assigned if p in ends}
        return {p: n for p, n in left.items() if n > 0}

    def _seek(self, p: int, offset: int) -> Seek:
        self._seeks[p] = self._seeks.get(p, 0) + 1
        return Seek(p, offset)
