"""Safety limits on what one render may read from git.

Git content is untrusted: a repository can hold a 50 GB file, a YAML "billion
laughs" or a million tiny objects. These bounds keep one sync from exhausting
the operator's memory or time; the defaults are far above any real deploy tree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Limits:
    # One file, before and after YAML aliases are expanded (etcd caps an object
    # at 1.5 MiB, so no real manifest file comes near).
    max_file_bytes: int = 5 * MiB
    # All files read by one render, plus kustomize's output.
    # Python objects cost up to ~16 bytes of memory per byte of dense YAML (many
    # small mappings): two renders at this bound stay far below the operator's
    # 1 GiB memory limit (bench/render_memory.py measures it).
    max_total_bytes: int = 20 * MiB
    # Objects one render may produce (List items count one each).
    max_objects: int = 5000
    # Nesting of YAML/JSON collections; deep CRD schemas stay well below 100.
    # Also keeps the recursive YAML composer far from Python's recursion limit.
    max_depth: int = 200
    # `kubectl kustomize` wall time when no deadline is tighter.
    kubectl_timeout_seconds: float = 120.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"Limits.{f.name} must be positive")
