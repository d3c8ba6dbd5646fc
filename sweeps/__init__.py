"""Sweeps: a named grid of runs of one query (inputs, dependency inputs, variation groups), resumable.

grid.py parses --grid and makes the points; record.py keeps runs/sweeps/<name>/sweep.json; executors.py
runs points (one after another, --jobs N pinned to disjoint cores, or on a cluster); table.py turns a sweep
into rows (point settings + the flat fields of its run); cli.py holds the verbs `sweep`, `sweep show`,
`sweep list`. docs/sweeps.md describes them.
"""
