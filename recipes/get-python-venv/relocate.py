"""Make a venv's console scripts relocatable: pip wrote the build folder's absolute path into them.

pip writes `#!BUILD/bin/python`, or, where that line would not work (a path with a space, or one longer than
the 127 bytes a kernel reads of a #! line), its trampoline, valid as both sh and Python:
    #!/bin/sh
    '''exec' "BUILD/bin/python" "$0" "$@"
    ' '''
Both headers are replaced with the same trampoline running the python beside the script.
"""
import os
import sys

TRAMPOLINE = b"#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/python \"$0\" \"$@\"\n' '''\n"


def header_end(text, build):
    """How many bytes of text are a header naming the build folder (0: none, leave the file alone)."""
    first, _, rest = text.partition(b"\n")
    if first.startswith(b"#!") and build in first:
        return len(first) + 1
    second, _, rest = rest.partition(b"\n")
    third = rest.split(b"\n", 1)[0]
    if first == b"#!/bin/sh" and second.startswith(b"'''exec' ") and build in second and third == b"' '''":
        return len(first) + len(second) + len(third) + 3
    return 0


def main(folder):
    build = os.path.abspath(folder).encode()
    for name in sorted(os.listdir(os.path.join(folder, "bin"))):
        path = os.path.join(folder, "bin", name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            text = f.read()
        end = header_end(text, build)
        if end:
            with open(path, "wb") as f:
                f.write(TRAMPOLINE + text[end:])


if __name__ == "__main__":
    main(sys.argv[1])
