"""The store's table of legal moves and the CLI's verbs agree; names are the state names."""

from __future__ import annotations

from spool.cli import main
from spool.layout import STATES
from spool.store import MOVES


def test_every_cli_verb_that_moves_jobs_is_a_legal_move():
    moving = {"submit", "cancel", "retry", "purge"}
    assert moving <= set(main.commands)
    assert moving <= set(MOVES)


def test_moves_only_name_known_states():
    for verb, (source, dest) in MOVES.items():
        assert source in (*STATES, "tmp"), verb
        assert dest in (*STATES, None), verb


def test_ls_states_are_the_directory_names():
    ls = main.commands["ls"]
    choices = next(p for p in ls.params if p.name == "state").type.choices
    assert set(choices) == {*STATES, "all"}
