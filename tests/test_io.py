"""Shared files: a cache folder is built once across processes, and a half-built one is never used."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llava_df.errors import RunError
from llava_df.io import COMPLETE, build_once, is_complete

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp: Path) -> None:
    (tmp / "config.json").write_text("{}")
    (tmp / "model.safetensors").write_bytes(b"w" * 64)


def test_many_processes_asking_at_once_build_the_folder_once(tmp_path):
    target, log = tmp_path / "cache" / "tiny-x", tmp_path / "builders.log"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from llava_df.io import build_once
        def write(tmp):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(1.0)  # long enough that the others arrive while it builds
            (tmp / "config.json").write_text("{{}}")
        print(build_once(Path({str(target)!r}), write))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert outputs == [str(target)] * 4
    assert len(log.read_text().split()) == 1  # one builder; the other three waited for it
    assert is_complete(target) and (target / "config.json").is_file()
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == ["tiny-x"]


def test_a_folder_without_its_marker_is_rebuilt_not_used(tmp_path, caplog):
    target = tmp_path / "tiny-x"
    target.mkdir()
    (target / "processor_config.json").write_text("{}")  # what a rank whose weights were skipped left
    assert not is_complete(target)
    assert build_once(target, _write) == target
    assert sorted(p.name for p in target.iterdir()) == sorted([COMPLETE, "config.json", "model.safetensors"])
    assert "is incomplete" in caplog.text and "rebuilding it" in caplog.text


def test_a_file_changed_after_the_marker_makes_the_folder_incomplete(tmp_path):
    target = build_once(tmp_path / "tiny-x", _write)
    listed = json.loads((target / COMPLETE).read_text())["files"]
    assert listed == {"config.json": 2, "model.safetensors": 64}
    (target / "model.safetensors").write_bytes(b"w" * 10)  # truncated
    assert not is_complete(target)


def test_a_build_that_fails_its_check_keeps_nothing(tmp_path):
    def no_weights(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")

    def needs_weights(tmp: Path) -> str | None:
        return None if any(tmp.glob("*.safetensors")) else "no weights were written"

    with pytest.raises(RunError, match="no weights were written"):
        build_once(tmp_path / "tiny-x", no_weights, verify=needs_weights)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_poisoned_tiny_cache_is_rebuilt_and_loads(tmp_path, monkeypatch):
    """The first torchrun on a fresh machine used to leave tiny-<digest> with the processor only."""
    from transformers import LlavaForConditionalGeneration

    from llava_df.model.tiny import materialize_tiny

    monkeypatch.setenv("LLAVA_DF_CACHE", str(tmp_path))
    folder = materialize_tiny()
    for name in (COMPLETE, "config.json", "model.safetensors"):
        (folder / name).unlink()  # as rank 1's processor-only folder looked
    again = materialize_tiny()
    assert again == folder and is_complete(folder)
    LlavaForConditionalGeneration.from_pretrained(folder)
