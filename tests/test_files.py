"""Atomic writes: a write killed half-way leaves the previous file, and no temporary."""
import pytest

from opom_jax import files


def test_interrupted_write_keeps_the_previous_file(tmp_path):
  target = tmp_path / "report.json"
  target.write_text("previous")

  def half_then_crash(f):
    f.write(b"{\"prot")
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    files.atomic_write(target, half_then_crash)
  assert target.read_text() == "previous"
  assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
  files.atomic_write_text(target, "new")
  assert target.read_text() == "new"
  assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_creates_missing_folders(tmp_path):
  target = tmp_path / "a" / "b" / "c.txt"
  files.atomic_write_text(target, "x")
  assert target.read_text() == "x"
