"""Cache keys: one sha256 per concrete node, over everything that affects its output.

The key is a Merkle hash (as in Spack and Nix): the recipe's meaningful content,
the chosen variations (defaults included), the declared inputs' values, the
version, the host environment the recipe declares as affecting it, and the keys
of its dependencies, plus a schema version so a change of format never reuses
an old entry. The hashed material is kept so `mlrun explain` can say what differs.
"""
import hashlib
import json

from .secrets import MASK, mask_urls

KEY_SCHEMA = 1

# Fields of a recipe that only document it, or only refuse values (an input's min, max and above: a value they
# take builds what it built before): editing them never changes a key.
COSMETIC = ("description", "help", "path", "lines", "line", "digest", "record", "aliases", "min", "max", "above",
            "multiple_of", "file", "written", "mirror_files", "alone", "timeout")
# mirror_files (added in 0.13.1, in no recipe before it, so no earlier digest changes) only says what `mirror fetch`
# puts in a mirror; the step's probe keys the copy it takes. alone (0.13.5) only says how the step is scheduled,
# timeout only how long it may run: a build that ends is the same build.
# Mappings whose keys are names the recipe's author chose (an input may be called `path`): never cosmetic.
NAMED = ("inputs", "variations", "env", "exports")


def canonical(value):
    """A stable byte encoding: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def strip_cosmetic(value, named=False):
    if isinstance(value, dict):
        return {k: strip_cosmetic(v, not named and k in NAMED) for k, v in value.items()
                if named or k not in COSMETIC}
    if isinstance(value, list):
        return [strip_cosmetic(v) for v in value]
    return value


def recipe_digest(recipe, file_digests=None):
    """Digest of a recipe's meaningful content plus the files it runs ({relpath: sha256}).

    Empty values (None, "", [], {}) are left out: a schema key added later with an empty default
    then changes no existing digest, so an mlrun upgrade does not rebuild every entry.
    """
    body = {"recipe": drop_empty(strip_cosmetic(recipe)), "files": file_digests or {}}
    return hashlib.sha256(canonical(body)).hexdigest()


def drop_empty(value):
    if isinstance(value, dict):
        kept = {k: drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [drop_empty(v) for v in value]
    return value


def material(recipe_digest_, node):
    out = {
        "schema": KEY_SCHEMA,
        "recipe": node.name,
        "recipe_digest": recipe_digest_,
        "version": node.version,
        "variations": node.variations,
        # a URL's password or token in an input grants access, as a secret --env does: masked, another token is
        # the same entry (it built every node again, and a replay, given the record's mask, another key)
        "inputs": {k: mask_urls(v)[0] if isinstance(v, str) else v for k, v in node.inputs.items()},
        # A secret --env override only grants access (a token, a password): it enters no key, so giving one builds
        # nothing again (was: a token given once made every node of the plan, venvs too, another entry).
        "env": {k: v for k, v in node.env.items() if v != MASK},
        "hash_env": node.hash_env,
        "deps": [[name, dep.key] for name, dep in node.deps],
    }
    if node.probes:  # only then: recipes without probes keep their keys
        out["probe"] = node.probes
    if node.contents:  # `content: true` path inputs: keyed by their content, not by where they lie
        out["inputs"] = {**out["inputs"], **{name: "sha256:" + d for name, d in node.contents.items()}}
    return out


def key(material_):
    return hashlib.sha256(canonical(material_)).hexdigest()


def _pairs(value):
    return isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value)


def differences(a, b, prefix=""):
    """Paths where two materials differ, as (path, value in a, value in b)."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if k == "deps" and not prefix and _pairs(va) and _pairs(vb):   # [[name, key], ...]: by name
            va, vb = dict(map(tuple, va)), dict(map(tuple, vb))
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((prefix + k, va, vb))
    return out
