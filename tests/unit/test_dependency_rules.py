"""The end rules of the three dependency kinds (DESIGN §12), as a pure table."""

from __future__ import annotations

import pytest

from spool.dependencies import dependencies, judge, never_reason

DONE_OK, DONE_CANCELLED, DEAD = ("done", "completed"), ("done", "cancelled"), ("dead", "failed")


@pytest.mark.parametrize(("kind", "fate", "verdict"), [
    ("after", DONE_OK, "met"),
    ("after", DONE_CANCELLED, "never"),
    ("after", DEAD, "never"),
    ("after", ("done", None), "waiting"),      # its outcome is being filled in
    ("after_any", DONE_OK, "met"),
    ("after_any", DONE_CANCELLED, "met"),
    ("after_any", DEAD, "met"),
    ("after_failed", DONE_OK, "never"),
    ("after_failed", DONE_CANCELLED, "never"),
    ("after_failed", DEAD, "met"),
    ("after_failed", ("dead", None), "met"),   # in dead/, whatever is still being written
])
def test_each_kind_against_each_end(kind, fate, verdict):
    assert judge(kind, fate).verdict == verdict


def test_the_reason_names_the_dependency_its_kind_and_its_fate():
    reason = never_reason("after", "build", judge("after", DEAD).fate)
    assert reason.startswith("dependency 'build' (after) ended dead (failed)")
    assert "never complete" in never_reason("after", "b", "cancelled")
    assert "never fail" in never_reason("after_failed", "b", "completed")


def test_dependencies_of_a_body_skip_what_is_no_id():
    body = {"after": ["a", 5], "after_any": ["b"], "after_failed": "c"}
    assert dependencies(body) == (("after", "a"), ("after_any", "b"))
