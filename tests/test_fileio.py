import pytest

from segloss.fileio import atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write(path, "old")
    atomic_write(path, b"new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, "good")
    with pytest.raises(TypeError):
        atomic_write(path, 42)  # not str or bytes: fails before the rename
    assert path.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # the temporary file is cleaned up
