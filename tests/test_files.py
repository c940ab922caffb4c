"""Atomic writes: a write killed half-way leaves the previous file, and no temporary;
in a multi-process run only process 0 writes shared files."""
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


def test_other_processes_write_only_their_own_files(tmp_path, monkeypatch):
  monkeypatch.setattr(files, "_this_process_writes", lambda: False)  # process 1 of 2
  shared, own = tmp_path / "masks.npz", tmp_path / "part-1-of-2.npz"
  files.atomic_write(shared, lambda f: f.write(b"x"))
  files.atomic_write(own, lambda f: f.write(b"y"), every_process=True)
  assert not shared.exists()
  assert own.read_bytes() == b"y"
