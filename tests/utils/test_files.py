import pytest

from advmed.utils.files import atomic_write, write_json


def test_failed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_write_json_roundtrip(tmp_path):
    import json

    path = write_json(tmp_path / "a" / "m.json", {"x": 1.5})
    assert json.loads(path.read_text()) == {"x": 1.5}


def test_written_file_has_the_mode_a_plain_open_gives(tmp_path):
    """Not mkstemp's owner-only 0600: results on a shared cluster stay readable by the group."""
    import os

    from advmed.utils.files import write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(atomic).st_mode & 0o777 == os.stat(plain).st_mode & 0o777
