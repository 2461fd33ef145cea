"""keep_freed_memory: freed tensors are reused instead of mapped afresh (page faults counted in
a fresh process, since the setting is per process and cannot be undone)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"),
    reason="keep_freed_memory only changes glibc's malloc (Linux)",
)

CHILD = """
import json, resource, sys
import torch
from breastcad.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
for _ in range(5):  # 64 MiB, above glibc's largest dynamic mmap threshold; the heap settles
    torch.ones(16 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 << 20).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "again": keep_freed_memory(), "faults": faults}))
"""


def run_child(keep: bool, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(int(keep))],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_tensors_are_reused_without_page_faults() -> None:
    default, kept = run_child(False), run_child(True)
    pages = (64 << 20) // 4096
    assert default["faults"] >= 18 * pages  # each 64 MiB tensor mapped afresh
    assert kept["applied"] and kept["again"]
    # Most of the next twenty reuse freed memory (measured: 0-2 of 10 mapped afresh, as small
    # allocations shift the heap's top).
    assert kept["faults"] <= 5 * pages


def test_users_own_malloc_settings_and_the_switch_are_respected() -> None:
    for key, value in (("BREASTCAD_KEEP_FREED_MEMORY", "0"), ("MALLOC_MMAP_THRESHOLD_", "131072")):
        env = {**os.environ, key: value}
        result = run_child(True, env)
        assert not result["applied"], key
        assert result["faults"] >= 18 * (64 << 20) // 4096, key  # glibc's behaviour left alone
