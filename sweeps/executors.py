"""PLACEHOLDER until sweep-core is merged: the Task/Outcome contract of common.md."""
from dataclasses import dataclass


@dataclass
class Task:
    point_id: str
    argv: list
    cpus: int = 1
    gpus: int = 0
    measures: bool = False


@dataclass
class Outcome:
    point_id: str
    returncode: int
    run_id: object
    node: str
    seconds: float
    stderr_tail: str
