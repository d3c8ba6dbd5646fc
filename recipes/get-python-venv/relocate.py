"""Make a venv's console scripts relocatable: pip wrote the build folder's absolute path in their #! line.

The replacement is pip's own trampoline, valid as both sh and Python: it runs the python beside the script.
"""
import os
import sys

TRAMPOLINE = b"#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/python \"$0\" \"$@\"\n' '''\n"

build = os.path.abspath(sys.argv[1]).encode()
for name in sorted(os.listdir(os.path.join(sys.argv[1], "bin"))):
    path = os.path.join(sys.argv[1], "bin", name)
    if os.path.islink(path) or not os.path.isfile(path):
        continue
    with open(path, "rb") as f:
        first, rest = f.readline(), f.read()
    if first.startswith(b"#!") and build in first:
        with open(path, "wb") as f:
            f.write(TRAMPOLINE + rest)
