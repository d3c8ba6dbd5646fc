"""What pip installs: the chosen set's pins, then --packages; a package of --packages that the set or the
constraints also pin replaces their pin (onnxruntime==1.22.0 replaces the set's onnxruntime==1.23.2), so asking
for another version builds that version instead of ending in pip's conflict between two pins.

usage: requirements.py SET PACKAGES CONSTRAINTS OUT_CONSTRAINTS
Prints the requirements, space-separated; writes the constraints less those --packages names to OUT_CONSTRAINTS.
"""
import re
import sys

NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def name(requirement):
    """The project name as pip compares it (PEP 503: case and runs of -_. do not matter)."""
    found = NAME.match(requirement.strip())
    return re.sub(r"[-_.]+", "-", found.group(0)).lower() if found else requirement


def main(chosen, packages, constraints, out_constraints):
    asked = packages.split()
    mine = {name(p) for p in asked}
    kept = [p for p in chosen.split() if name(p) not in mine]
    with open(constraints) as f:
        lines = f.readlines()
    with open(out_constraints, "w") as f:
        f.writelines(line for line in lines if line.lstrip().startswith("#") or name(line) not in mine)
    print(" ".join(kept + asked))


if __name__ == "__main__":
    main(*sys.argv[1:])
