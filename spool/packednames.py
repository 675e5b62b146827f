"""Sorted canonical pending names, held compactly: a worker's view of 1,000,000 pending jobs.

A name `P-DUE-ID.json` whose ID is one spool makes (`spool.layout.new_id`:
`YYYYMMDDTHHMMSS.ffffff-` and 12 hex digits) is 66 characters; as a Python string in a list it
costs about 136 bytes. Here its digits are packed two to a byte into a 27-byte record (priority,
due, the id's time, the id's random part). Packing keeps the order of the names (digits and
lowercase hex sort as their nibbles do), so records compare as their names do. The records lie
in blocks of 512 (`bytearray`s, each sorted, each after the one before): a name is
found by bisecting the blocks' first records, then its block, and taken out or put in by moving
one block's bytes, never the whole view's.

A name of any other shape (an id a user gave, a cron fire's id) stays a string, in a sorted
list beside the blocks, its id in a set, as every name was before; each question is asked of
both and the lesser answer taken.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

RECORD = 27  # bytes of a packed name
ID_AT = 11  # where the id starts in a record (after the priority and the due stamp)
BLOCK = 512  # records in a block as built (14 kB); a block twice as long is split in two
CHUNK = 16384  # records sorted at once while building (their bytes objects cost 72 bytes each)
FIRST_CHUNK = 131072  # ... and the first time, when nothing else is held yet
_PACKABLE = re.compile(r"([0-9])-([0-9]{8})T([0-9]{6})\.([0-9]{6})Z-"
                       r"([0-9]{8})T([0-9]{6})\.([0-9]{6})-([0-9a-f]{12})\.json")
_PACKABLE_ID = re.compile(r"([0-9]{8})T([0-9]{6})\.([0-9]{6})-([0-9a-f]{12})")


def pack(name: str) -> bytes | None:
    """The record of a name, or None when it has another shape."""
    match = _PACKABLE.fullmatch(name)
    return bytes.fromhex("0" + "".join(match.groups())) if match else None


def pack_listed(name: str, days: dict[str, bool]) -> bytes | None:
    """`pack` for a name found in pending/: None also when its DUE is no real time, which
    `spool.layout.parse_pending_name` refuses (the caller judges such a name). `days`: the
    dates judged so far in this listing (a listing has few)."""
    record = pack(name)
    if record is None:
        return None
    day = name[2:10]
    if day not in days:
        try:
            datetime(int(day[:4]), int(day[4:6]), int(day[6:]))
            days[day] = True
        except ValueError:
            days[day] = False
    real = days[day] and name[11:13] < "24" and name[13:15] < "60" and name[15:17] < "60"
    return record if real else None


def unpack(record: bytes | bytearray) -> str:
    h = record.hex()
    return (f"{h[1]}-{h[2:10]}T{h[10:16]}.{h[16:22]}Z-"
            f"{h[22:30]}T{h[30:36]}.{h[36:42]}-{h[42:]}.json")


def _records(packed: bytes | bytearray) -> Iterator[bytes]:
    for start in range(0, len(packed), RECORD):
        yield bytes(packed[start:start + RECORD])


def _stamp_key(priority: int, stamp: str) -> bytes:
    """The record prefix of a priority and a due stamp `YYYYMMDDTHHMMSS.ffffffZ`."""
    return bytes.fromhex(f"0{priority}{stamp[:8]}{stamp[9:15]}{stamp[16:22]}")


def merge(runs: list[list[bytearray]]) -> Iterator[bytes]:
    """The records of sorted runs (each a list of blocks) in order, each once."""
    last = b""
    for record in heapq.merge(*map(_drain, runs)):
        if record != last:  # a name given twice is there once
            yield record
            last = record


def _drain(blocks: list[bytearray]) -> Iterator[bytes]:
    """The records of `blocks`, each block let go once read: the runs being merged and the
    blocks built from them together stay near the size of the result (blocks of one size, so
    that the memory one frees is the memory the next takes)."""
    blocks.reverse()
    while blocks:
        yield from _records(blocks.pop())


def _blocks(records: list[bytes]) -> list[bytearray]:
    return [bytearray().join(records[start:start + BLOCK])
            for start in range(0, len(records), BLOCK)]


def _sorted_runs(names: Iterable[str],
                 keep: Callable[[str], bool] | None) -> tuple[list[list[bytearray]], set[str]]:
    """The records of `names` in sorted runs (one when they are few), and the names that do
    not pack (those `keep` keeps, when given)."""
    runs: list[list[bytearray]] = []
    chunk: list[bytes] = []
    limit = FIRST_CHUNK  # up to this many, one sort and no merge; runs of CHUNK after it
    others: set[str] = set()
    days: dict[str, bool] = {}
    for name in names:
        record = pack_listed(name, days) if keep else pack(name)
        if record is None:
            if keep is None or keep(name):
                others.add(name)
            continue
        chunk.append(record)
        if len(chunk) == limit:
            runs.append(_blocks(sorted(set(chunk))))
            chunk, limit = [], CHUNK
    if chunk or not runs:
        runs.append(_blocks(sorted(set(chunk))))
    return runs, others


def _regroup(records: Iterator[bytes]) -> Iterator[bytearray]:
    """`records` in blocks of BLOCK."""
    block: list[bytes] = []
    for record in records:
        block.append(record)
        if len(block) == BLOCK:
            yield bytearray().join(block)
            block = []
    if block:
        yield bytearray().join(block)


class SortedNames:
    """A sorted set of canonical pending names: blocks of packed records, and a sorted list of
    the names that do not pack. The walks the view needs go by name, not by position."""

    def __init__(self, names: Iterable[str] = (),
                 keep: Callable[[str], bool] | None = None) -> None:
        """`names` in order; with `keep` (a listing), a name that does not pack is kept only
        when `keep` says so (what packs is canonical: `keep` judges the rest)."""
        runs, others = _sorted_runs(names, keep)
        self.blocks: list[bytearray] = []
        self.firsts: list[bytes] = []  # the first record of each block
        self.others = sorted(others)  # names that do not pack (ids users gave, cron's ids)
        # how many names of each id: a stale view may hold two names of one id
        self._other_ids = Counter(name[26:-5] for name in self.others)
        for block in runs[0] if len(runs) == 1 else _regroup(merge(runs)):
            self._append_block(block)

    def _append_block(self, block: bytearray) -> None:
        self.blocks.append(block)
        self.firsts.append(bytes(block[:RECORD]))

    def __len__(self) -> int:
        return sum(len(block) for block in self.blocks) // RECORD + len(self.others)

    def __bool__(self) -> bool:
        return bool(self.blocks or self.others)

    def __iter__(self) -> Iterator[str]:
        # a snapshot: the caller may change the names meanwhile
        packed = (unpack(record) for block in list(self.blocks)
                  for record in _records(bytes(block)))
        yield from heapq.merge(packed, list(self.others))

    def __getitem__(self, index: int) -> str:
        first = self.first() if index == 0 else None
        return first if first is not None else list(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, SortedNames)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        record = pack(name)
        if record is not None:
            return self._at(record) == record
        index = bisect.bisect_left(self.others, name)
        return index < len(self.others) and self.others[index] == name

    # -- packed records ------------------------------------------------------------------

    def _find(self, key: bytes) -> tuple[int, int]:
        """(block, byte offset in it) of the first record not below `key`; the offset may be
        the block's end (then the answer starts the next block, if any)."""
        number = max(0, bisect.bisect_right(self.firsts, key) - 1)
        if number >= len(self.blocks):
            return number, 0
        block, low, high = self.blocks[number], 0, len(self.blocks[number]) // RECORD
        while low < high:
            middle = (low + high) // 2
            if block[middle * RECORD:(middle + 1) * RECORD] < key:
                low = middle + 1
            else:
                high = middle
        return number, low * RECORD

    def _records_from(self, key: bytes) -> Iterator[bytes]:
        """The records not below `key`, in order."""
        number, offset = self._find(key)
        while number < len(self.blocks):
            block = self.blocks[number]
            for start in range(offset, len(block), RECORD):
                yield bytes(block[start:start + RECORD])
            number, offset = number + 1, 0

    def _at(self, key: bytes) -> bytes | None:
        """The first record not below `key`, or None."""
        return next(self._records_from(key), None)

    def _packed_after(self, name: str) -> str | None:
        """The first packed name after `name`, which may be of any canonical shape: records
        sort as their names do, so they are bisected by name (a scan of the records of one
        due time would read 1,000,000 of them per name of another shape)."""
        record = pack(name)
        if record is not None:
            found = self._at(record + b"\0")
            return unpack(found) if found is not None else None
        number = max(0, bisect.bisect_right(self.firsts, name, key=unpack) - 1)
        for block in self.blocks[number:number + 2]:  # the next block's first is after it
            low, high = 0, len(block) // RECORD
            while low < high:
                middle = (low + high) // 2
                if unpack(block[middle * RECORD:(middle + 1) * RECORD]) <= name:
                    low = middle + 1
                else:
                    high = middle
            if low * RECORD < len(block):
                return unpack(block[low * RECORD:(low + 1) * RECORD])
        return None

    # -- what the view asks --------------------------------------------------------------

    def add(self, name: str) -> bool:
        """Insert `name`; False when it was there."""
        record = pack(name)
        if record is None:
            index = bisect.bisect_left(self.others, name)
            if index < len(self.others) and self.others[index] == name:
                return False
            self.others.insert(index, name)
            self._other_ids[name[26:-5]] += 1
            return True
        if not self.blocks:
            self._append_block(bytearray(record))
            return True
        number, offset = self._find(record)
        block = self.blocks[number]
        if block[offset:offset + RECORD] == record:
            return False
        block[offset:offset] = record
        if offset == 0:
            self.firsts[number] = record
        if len(block) >= 2 * BLOCK * RECORD:  # split: moving it stays cheap
            half = len(block) // RECORD // 2 * RECORD
            self.blocks[number + 1:number + 1] = [block[half:]]
            self.firsts[number + 1:number + 1] = [bytes(block[half:half + RECORD])]
            del block[half:]
        return True

    def discard(self, name: str) -> bool:
        """Remove `name`; False when it was not there."""
        record = pack(name)
        if record is None:
            index = bisect.bisect_left(self.others, name)
            if index == len(self.others) or self.others[index] != name:
                return False
            del self.others[index]
            job_id = name[26:-5]
            self._other_ids[job_id] -= 1
            if not self._other_ids[job_id]:
                del self._other_ids[job_id]
            return True
        if not self.blocks:
            return False
        number, offset = self._find(record)
        block = self.blocks[number]
        if block[offset:offset + RECORD] != record:
            return False
        del block[offset:offset + RECORD]  # at a block's front (a claim), this moves nothing
        if not block:
            del self.blocks[number], self.firsts[number]
        elif offset == 0:
            self.firsts[number] = bytes(block[:RECORD])
        return True

    def first(self) -> str | None:
        packed = unpack(self.firsts[0]) if self.blocks else None
        return _least(packed, self.others[0] if self.others else None)

    def following(self, name: str) -> str | None:
        """The first name after `name` (which need not be here)."""
        index = bisect.bisect_right(self.others, name)
        return _least(self._packed_after(name),
                      self.others[index] if index < len(self.others) else None)

    def first_of_priority(self, priority: int) -> str | None:
        """The first name of `priority` or a later one."""
        index = bisect.bisect_left(self.others, f"{priority}-")
        found = self._at(bytes([priority]))
        return _least(unpack(found) if found is not None else None,
                      self.others[index] if index < len(self.others) else None)

    def first_due_after(self, priority: int, stamp: str) -> str | None:
        """The first name after every name of `priority` due at or before `stamp`
        (`YYYYMMDDTHHMMSS.ffffffZ`)."""
        index = bisect.bisect_right(self.others, f"{priority}-{stamp}-\x7f")
        found = self._at(_stamp_key(priority, stamp) + b"\xff")  # past its ids (BCD < 0xff)
        return _least(unpack(found) if found is not None else None,
                      self.others[index] if index < len(self.others) else None)

    def has_id(self, job_id: str) -> bool:
        """Whether a name of this id is here (a search of the records for an id spool made:
        it answers dependency checks, a few per claim pass)."""
        match = _PACKABLE_ID.fullmatch(job_id)
        if not match:
            return job_id in self._other_ids
        key = bytes.fromhex("".join(match.groups()))
        for block in self.blocks:
            start = 0
            while (found := block.find(key, start)) >= 0:
                if found % RECORD == ID_AT:
                    return True
                start = found + 1
        return False

    @property
    def ids(self) -> _Ids:
        """The ids of the names, for `in` (spool.dependencies: is a dependency pending?)."""
        return _Ids(self)


def _least(first: str | None, second: str | None) -> str | None:
    if first is None or second is None:
        return first if second is None else second
    return min(first, second)


class _Ids:
    def __init__(self, names: SortedNames) -> None:
        self.names = names

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and self.names.has_id(job_id)
