"""A job type's program found along PATH once, the way execvp finds it; a program that moved
since is searched again, and a missing one fails with execvp's own error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spool.execpath import find_program, forget
from spool.commands import start_command
from spool.execution import read_result


@pytest.fixture(autouse=True)
def fresh_cache():
    forget()
    yield
    forget()


def program(directory: Path, name: str, mode: int = 0o755) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def test_the_first_executable_regular_file_along_path_wins(tmp_path):
    program(tmp_path / "a", "prog", 0o644)  # not executable: execvp goes on
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "prog").mkdir()  # a directory: execvp goes on
    found = program(tmp_path / "c", "prog")
    later = program(tmp_path / "d", "prog")
    path = os.pathsep.join(str(tmp_path / d) for d in "abcd")
    assert find_program("prog", path) == str(found)
    assert find_program("prog", str(later.parent)) == str(later)  # PATH is part of the key


def test_names_with_a_slash_and_relative_path_entries_are_left_to_execvp(tmp_path):
    program(tmp_path / "a", "prog")
    assert find_program("./prog", str(tmp_path / "a")) is None
    assert find_program("prog", os.pathsep.join(["rel", str(tmp_path / "a")])) is None
    assert find_program("nosuch-program-here", str(tmp_path / "a")) is None


def run(argv: list[str], path: str) -> int:
    read, write = os.pipe()
    try:
        pid, popen = start_command(argv, {"PATH": path}, write, None)
    finally:
        os.close(write)
    os.close(read)
    return popen.wait() if popen else os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_program_moved_since_it_was_found_is_searched_again(tmp_path):
    first = program(tmp_path / "a", "prog")
    (tmp_path / "b").mkdir()
    path = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    assert run(["prog"], path) == 0
    assert find_program("prog", path) == str(first)
    first.rename(tmp_path / "b" / "prog")
    assert run(["prog"], path) == 0
    assert find_program("prog", path) == str(tmp_path / "b" / "prog")


def test_a_missing_program_fails_with_its_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nosuch-program-here"):
        run(["nosuch-program-here"], str(tmp_path))


def test_the_program_runs_with_its_own_argv0(tmp_path):
    out = tmp_path / "argv0"
    script = f"head -c 3 /proc/$$/cmdline > {out}"
    assert run(["sh", "-c", script], os.environ["PATH"]) == 0
    assert find_program("sh", os.environ["PATH"])
    assert out.read_bytes() == b"sh\0"


def test_no_result_file_means_no_unlink(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("spool.execution.discard", calls.append)
    assert read_result(tmp_path / "result", 100) == (None, None)
    assert calls == []
    (tmp_path / "result").write_text("[1]")
    assert read_result(tmp_path / "result", 100) == ([1], None)
    assert calls == [tmp_path / "result"]


def test_descriptors_are_sealed_again_after_an_import(monkeypatch):
    """A C extension imported for a handler may open an inheritable descriptor: the next start
    seals it, as it sealed those the worker inherited at its exec."""
    import sys
    import types

    from spool import commands

    assert commands.seal_descriptors()
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        os.set_inheritable(fd, True)
        assert commands.seal_descriptors() and os.get_inheritable(fd)  # nothing imported
        monkeypatch.setitem(sys.modules, "spool_test_imported", types.ModuleType("x"))
        assert commands.seal_descriptors() and not os.get_inheritable(fd)
    finally:
        os.close(fd)
