"""The environment a step sees, built from nothing in a declared order.

Order: a minimal base taken from the host, the host variables the recipe hashes,
the exports of its dependencies (dep by dep in the listed order, each after its
own deps, so a later dep wins), the recipe's own env with the command line's
--env.KEY=VALUE merged over it by the resolver (so they are part of the key; expanded as a whole, see
expand_own),
and last what mlrun itself provides (MLRUN_ENTRY, MLRUN_RECIPE_DIR, inputs).
The result is recorded with the step.
"""
import os
import re
import shlex
import sys

from . import secrets

BASE_VARS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(value, env):
    """Replace ${VAR} with its value in env (empty when unset)."""
    return _REF.sub(lambda m: env.get(m.group(1), ""), value)


def expand_own(values, env, literal=()):
    """A recipe's own variables expanded as a whole: ${B} in A is B's value from the same mapping wherever B is
    written (keys hash the mapping sorted, so the order it is written in must not change what a step gets: it
    did, under the same key); ${A} in A itself is the value before (PATH: "${PATH}:/x"). literal: keys whose
    values stay as given (secrets). Raises ValueError naming a cycle (A: ${B}, B: ${A})."""
    done = {}

    def value_of(key, path):
        if key not in done:
            if key in path:
                raise ValueError(" -> ".join(path[path.index(key):] + [key]))
            done[key] = values[key] if key in literal else _REF.sub(
                lambda m: (value_of(m.group(1), path + [key]) if m.group(1) in values and m.group(1) != key
                           else env.get(m.group(1), "")), values[key])
        return done[key]
    for key in values:
        value_of(key, [])
    return done


def placeholders(value, entry, recipe_dir=None):
    value = value.replace("{entry}", entry)
    return value.replace("{recipe}", recipe_dir) if recipe_dir else value


def apply_exports(env, exports, entry):
    """Add one dependency's exports; `{entry}` is its folder, resolved now so caches can move."""
    for key, value in exports.items():
        if isinstance(value, dict):   # paths first: a plain export may name them, wherever it is written
            front = [placeholders(p, entry) for p in value.get("prepend", [])]
            back = [placeholders(p, entry) for p in value.get("append", [])]
            # A path already listed moves rather than repeats (shared deps apply more than once).
            middle = [p for p in env.get(key, "").split(os.pathsep) if p and p not in front + back]
            env[key] = os.pathsep.join(front + middle + back)
    env.update(expand_own({k: placeholders(v, entry) for k, v in exports.items() if not isinstance(v, dict)}, env))
    return env


def input_env(node):
    out = {}
    for name, value in node.inputs.items():
        if value is None:
            continue
        out[node.input_vars[name]] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def step_env(node, chain, host, entry, recipe_dir, mirror=None):
    """chain: [(dep node, dep folder)] in the order their exports apply."""
    env = {k: host[k] for k in BASE_VARS if k in host}
    env.update({k: v for k, v in node.hash_env.items() if v is not None})
    # The node holds secrets masked (keys must not depend on them); the step gets the real values.
    real = node.secret_env or {}
    env.update({k: real[k] for k in node.hash_env if k in real})
    # pass_env: host variables a step may use that do not change its output (a token, a cache folder).
    env.update({k: host[k] for k in node.pass_env or () if k in host})
    if mirror:
        env["MLRUN_MIRROR"] = mirror  # steps that fetch by themselves look there first, like mlrun does
    env["MLRUN_PYTHON"] = sys.executable  # a venv dep overrides it with its own interpreter
    # Imports write no bytecode beside what they import: as root they rewrote the stale .pyc files of a venv entry
    # copied without its file times (read-only modes do not stop root), and the step failed for changing its dep.
    # pip still compiles what it installs (compileall ignores this), so a venv's .pyc files are made as before.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for dep, folder in chain:
        apply_exports(env, dep.exports, folder)
    own = {k: real[k] if k in real else placeholders(v, entry, recipe_dir) for k, v in node.env.items()}
    env.update(expand_own(own, env, literal=real))
    env.update(input_env(node))
    env["MLRUN_ENTRY"] = entry
    env["MLRUN_RECIPE_DIR"] = recipe_dir
    for key, value in env.items():  # whatever set it (a recipe's env built from other variables, ...)
        if secrets.is_secret(key):
            secrets.remember(value)
    return env


def set_by_mlrun(name):
    """A variable mlrun sets itself for each step (an --env override of it made a new key while the step saw
    mlrun's value)."""
    from .recipe import STEP_OWN_ENV
    return name in STEP_OWN_ENV or name.startswith("MLRUN_INPUT_")


def command(node, env, entry, recipe_dir):
    """argv for the step: a string runs under bash with -e and pipefail, a list runs as is."""
    if isinstance(node.run, str):
        return ["bash", "-e", "-o", "pipefail", "-c", placeholders(node.run, entry, recipe_dir)]
    return [expand(placeholders(arg, entry, recipe_dir), env) for arg in node.run]


def env_file(env, passed=(), folder=None, final=None):
    """A sourceable shell file that recreates env (secrets and pass_env variables left for the user to set).

    A value that names the step's folder ({entry}) names $MLRUN_ENTRY instead, which command.sh sets to the
    folder it re-runs in (else the entry's published place): it named the temporary build folder, gone since.
    """
    lines = []
    for k, v in sorted(secrets.redacted(env, passed).items(), key=lambda kv: (kv[0] != "MLRUN_ENTRY", kv[0])):
        if folder and k == "MLRUN_ENTRY":   # first: the others may name it
            lines.append(f'export MLRUN_ENTRY="${{MLRUN_ENTRY:-{_in_double_quotes(final or folder)}}}"\n')
        elif folder and isinstance(v, str) and folder in v:
            lines.append(f'export {k}="' + "${MLRUN_ENTRY}".join(_in_double_quotes(part) for part in v.split(folder))
                         + '"\n')
        elif isinstance(v, str) and secrets.MASK in v:   # exported as '<redacted>', it overwrote the user's own value
            lines.append(f"# {k}: not written here (a secret, or passed from your environment): export it in your "
                         "shell\n")
        else:
            lines.append(f"export {k}={shlex.quote(v)}\n")
    return "".join(lines)


def _in_double_quotes(text):
    return re.sub(r'([\\"$`])', r"\\\1", text)


def dependency_chain(node, folders):
    """[(dep node, its folder)] in the order their exports apply.

    Deps apply in the order the recipe lists them, each right after its own deps
    (deepest first), so a later dep wins, subtree included. A node shared by two
    deps is applied again with the later one.
    """
    def closure(n, out):
        for _, dep in n.deps:
            closure(dep, out)
            out.append((dep, folders[dep.key]))
        return out
    chain = []
    for _, dep in node.deps:
        chain += closure(dep, []) + [(dep, folders[dep.key])]
    return chain
