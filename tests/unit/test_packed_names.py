"""The packed names of a worker's view (spool.packednames) answer as the sorted list of
strings they replace: the same order, the same bisections, the same ids, whatever mix of ids
it holds."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from spool import packednames
from spool.claim import PendingView
from spool.layout import new_id, parse_pending_name, pending_name
from spool.packednames import RECORD, SortedNames, pack, pack_listed, unpack
from spool.timeutil import UTC, due_stamp

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
made_ids = st.builds(lambda shift, token: f"{due_stamp(NOW + timedelta(microseconds=shift))[:-1]}"
                     f"-{token:012x}", st.integers(-10**9, 10**9), st.integers(0, 2**48 - 1))
user_ids = st.from_regex(r"[A-Za-z0-9_@+][A-Za-z0-9._@+-]{0,20}", fullmatch=True)


def names_of(ids):
    return st.builds(lambda priority, shift, job_id: pending_name(
        priority, NOW + timedelta(seconds=shift), job_id), st.integers(0, 9), st.integers(-5, 5), ids)


def lists_of(ids):
    return st.lists(names_of(ids), max_size=80, unique_by=lambda name: name[26:-5])


def test_a_name_spool_makes_packs_into_a_record_and_back():
    name = pending_name(5, NOW, new_id(NOW))
    record = pack(name)
    assert record is not None and len(record) == RECORD and unpack(record) == name
    assert pack(pending_name(5, NOW, "nightly-report")) is None


def after(names: list[str], probe: str) -> str | None:
    index = bisect.bisect_right(names, probe)
    return names[index] if index < len(names) else None


@given(lists_of(made_ids) | lists_of(made_ids | user_ids), st.data())
def test_sorted_names_answer_as_a_sorted_list(given_names, data):
    split = data.draw(st.integers(0, len(given_names)))
    initial, added = given_names[:split], given_names[split:] + given_names[:split][:3]
    sizes = packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK
    # several runs to merge (or one, when there are few names), blocks to split
    packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK = 11, 7, 3
    try:
        view = SortedNames(initial)
        expected = sorted(set(initial))
        for name in added:
            assert view.add(name) == (name not in expected)
            if name not in expected:
                bisect.insort(expected, name)
        assert all(len(block) < 2 * 3 * RECORD for block in view.blocks)  # split as they grow
        gone = data.draw(st.lists(st.sampled_from(expected), max_size=30)) if expected else []
        for name in gone:
            assert view.discard(name) == (name in expected)
            if name in expected:
                expected.remove(name)
    finally:
        packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK = sizes
    assert list(view) == expected and len(view) == len(expected)
    assert bool(view) == bool(expected) and view.first() == (expected[0] if expected else None)
    for name in expected:
        assert view.following(name) == after(expected, name)
    stamp = due_stamp(NOW)
    for priority in range(10):
        assert view.first_of_priority(priority) == after(expected, f"{priority}-\0")
        assert view.first_due_after(priority, stamp) == after(expected, f"{priority}-{stamp}-\x7f")
    for name in [*initial, *added]:
        assert (name in view) == (name in expected)
        assert (name[26:-5] in view.ids) == any(n[26:-5] == name[26:-5] for n in expected)


def test_an_id_found_only_across_two_records_is_not_there():
    first, second = (pending_name(5, NOW, f"{due_stamp(NOW)[:-1]}-{n:012x}") for n in (1, 2))
    view = SortedNames([first, second])
    straddling = bytes(view.blocks[0])[RECORD - 5:RECORD + 11]  # end of one, start of next
    job_id = unpack(bytes(11) + straddling)[26:-5]
    assert job_id not in view.ids and first[26:-5] in view.ids


def test_names_cost_27_bytes_each():
    base = NOW.replace(year=2027)
    view = SortedNames(pending_name(5, base + timedelta(microseconds=i),
                                    f"{due_stamp(base)[:-1]}-{i:012x}") for i in range(10**5))
    assert not view.others and sum(map(len, view.blocks)) == 27 * 10**5
    view.add(pending_name(5, base, "nightly"))  # one of another shape: the rest stay packed
    assert view.others == [pending_name(5, base, "nightly")] and len(view) == 10**5 + 1


@given(st.lists(st.from_regex(r"[0-9]-(2026|0000|[0-9]{4})(0[0-9]|1[0-3]|[0-9]{2})[0-9]{2}"
                              r"T[0-9]{6}\.[0-9]{6}Z-[0-9]{8}T[0-9]{6}\.[0-9]{6}-[0-9a-f]{12}"
                              r"\.json", fullmatch=True), max_size=20))
def test_a_listed_name_packs_exactly_when_it_is_canonical(listed):
    days: dict[str, bool] = {}  # one listing's
    for name in listed:
        assert (pack_listed(name, days) is not None) == bool(parse_pending_name(name))


def test_a_listing_keeps_canonical_names_and_notes_drops(tmp_path):
    good = pending_name(5, NOW, new_id(NOW))
    no_real_due = "5-20261399T120000.000000Z" + good[25:]  # month 13: a drop, not a job
    user_given = pending_name(5, NOW, "nightly")
    for name in (good, no_real_due, user_given, "report.json"):
        (tmp_path / name).write_text("{}")
    view = PendingView(SimpleNamespace(layout=SimpleNamespace(pending=tmp_path)))  # type: ignore
    view.refresh(0.0)
    assert list(view.names) == sorted([good, user_given]) and view.names.others == [user_given]
    assert sorted(view.drops) == sorted([no_real_due, "report.json"])
