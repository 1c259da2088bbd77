import re

import pytest

from segloss.fileio import atomic_write, read_json_object


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


def test_read_json_object_names_the_file_in_one_line(tmp_path):
    path = tmp_path / "x.json"
    assert read_json_object(path, required=False) == {}
    with pytest.raises(FileNotFoundError, match=rf"^{re.escape(str(path))}: not found$"):
        read_json_object(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"x\.json: expected a JSON object, got list$"):
        read_json_object(path)
    path.write_text('{"a": 1,\n')
    with pytest.raises(ValueError, match=r"x\.json: not valid JSON \(") as err:
        read_json_object(path)
    assert "\n" not in str(err.value)
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
