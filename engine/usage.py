"""The command line as a person types it: usage errors in words, CM's --tags, typos of verbs, the version.

argparse reports mistakes with its internal names ("the following arguments are required: what") and
exits; here they become one UsageError line naming what is missing and the nearest right word.
"""
import argparse
import os
import re
import sys

from .errors import MlrunError, ResolutionError, UsageError
from .words import did_you_mean, nearest


# What a word another verb owns was meant for: `mlrun show run X` is `mlrun runs show X`.
ELSEWHERE = {("mlrun show", "run"): "`mlrun runs show RUN` shows a run's record",
             ("mlrun show", "runs"): "`mlrun runs` lists the runs",
             ("mlrun show", "sweep"): "`mlrun sweep show NAME` shows a sweep"}



ARGV = []   # the words of the command line being parsed (cli.main sets them)

class _Once(argparse._StoreAction):
    """An option of one value given twice is refused, as inputs are (--cache A --cache B used B in silence)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_once", {})
        if self.dest in given and option_string:   # positionals: argparse may fill them more than once
            raise UsageError(f"{option_string} is given twice: {given[self.dest]!r} and {values!r}",
                             hint=f"give {option_string} once")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake raises UsageError (one line and a hint) instead of printing usage and exiting;
    an option is never taken from a prefix of its name (--cach was --cache, --js was --json, in silence), and
    one of one value is given once."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        for name in (None, "store"):   # the registry argument groups share: their options too
            self.register("action", name, _Once)

    def error(self, message):
        verb = self.prog
        typo = self._misspelt_option()
        if typo and re.match(r"the following arguments are required|argument \S+: invalid choice", message):
            # `runs --wher scenario=Offline`: "'scenario=Offline' is not one of show" blamed the value
            raise UsageError(f"{verb}: unknown option {typo[0]} (did you mean {typo[1]}?)", hint=f"{verb} --help")
        m = re.match(r"the following arguments are required: (.*)", message)
        if m:
            raise UsageError(f"{verb} needs {self._describe(m.group(1))}", hint=f"{verb} --help")
        m = re.match(r"argument (\S+): invalid choice: '(.*)' \(choose from (.*)\)", message)
        if m:
            choices = [c.strip(" '") for c in m.group(3).split(",")]
            raise UsageError(f"{verb}: '{m.group(2)}' is not one of {', '.join(choices)}"
                             + did_you_mean(m.group(2), choices),
                             hint=ELSEWHERE.get((verb, m.group(2)), f"{verb} --help"))
        m = re.match(r"argument (\S+): expected one argument", message)
        if m:   # a value that starts with '-' (--runs -dash) is read as another option
            flag = m.group(1).split("/")[-1]
            raise UsageError(f"{verb + ' ' if verb != 'mlrun' else ''}{flag} needs a value",
                             hint=f"give {flag} a value (one that starts with '-' is written {flag}=VALUE); "
                                  f"{verb} --help")
        raise UsageError(message if verb == "mlrun" else f"{verb}: {message}", hint=f"{verb} --help")   # "mlrun: error: mlrun: ..."

    def _misspelt_option(self):   # ARGV: the command line cli.main parses (not a caller's sys.argv)
        """(word, option) of a --word on this command line that is none of this parser's options but near one."""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        for word in ARGV[:ARGV.index("--")] if "--" in ARGV else ARGV:   # after --, words are no options
            name = word.split("=")[0]
            if name.startswith("--") and name != "--" and name not in known:
                close = nearest(name, known)
                if close:
                    return name, close[0]
        return None

    def _describe(self, names):
        """'cache|failed, FILE' -> 'what to do: cache or failed' (the first missing one is what matters)."""
        first = names.split(", ")[0]
        for action in self._actions:   # positionals only: --cache DIR is not the DIR that is missing
            if not action.option_strings and (action.metavar == first or action.dest == first):
                if action.choices:
                    return f"one of: {', '.join(action.choices)} ({action.help or action.dest})"
                return f"{first} ({action.help})" if action.help else first
        return first


class VersionAction(argparse.Action):
    """--version, computed only when asked (git describe costs a process start)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version())
        parser.exit()


def version():
    """mlrun's version (engine.version.__version__), with `git describe` when this is a git checkout."""
    import subprocess  # only --version starts git
    from .version import __version__
    from .settings import CHECKOUT
    text = f"mlrun {__version__}"
    if os.path.exists(os.path.join(CHECKOUT, ".git")):
        try:
            out = subprocess.run(["git", "-C", CHECKOUT, "describe", "--always", "--dirty", "--tags"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                text += f" (git {out.stdout.strip()})"
        except (OSError, subprocess.TimeoutExpired):
            pass   # no git here: the version alone
    return text


def recorded_version():
    """'0.12.0 (commit 9721d03)': mlrun's version and its checkout's commit, read from .git's files (a run records it;
    git describe would cost every run a process start). The version alone outside a git checkout."""
    from .version import __version__
    from .settings import CHECKOUT
    git = common = os.path.join(CHECKOUT, ".git")
    try:
        if os.path.isfile(git):   # a worktree (git worktree add): "gitdir: DIR", its HEAD there, refs in its commondir
            with open(git) as f:   # (recorded as the version alone, a replay of its run in a clone at the same
                line = f.read().strip()   # commit listed "mlrun" as a host difference, diff exit 1)
            if not line.startswith("gitdir: "):
                return __version__
            git = common = os.path.join(CHECKOUT, line[8:])
            if os.path.isfile(os.path.join(git, "commondir")):
                with open(os.path.join(git, "commondir")) as f:
                    common = os.path.join(git, f.read().strip())
        with open(os.path.join(git, "HEAD")) as f:
            head = f.read().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            try:
                with open(os.path.join(common, ref)) as f:
                    head = f.read().strip()
            except FileNotFoundError:   # packed by git gc
                with open(os.path.join(common, "packed-refs")) as f:
                    head = next(line.split()[0] for line in f if line.rstrip().endswith(" " + ref))
        if re.fullmatch(r"[0-9a-f]{40,64}", head):
            return f"{__version__} (commit {head[:12]})"
    except (OSError, StopIteration, UnicodeDecodeError, ValueError):   # ValueError: a NUL in a path read (corrupt)
        pass   # no checkout (a copy, a wheel): the version alone
    return __version__


def cm_tags(argv, verbs=(), global_with_value=(), flags=()):
    """CM's habit `--tags=app,mlperf,bert,_cpu` (and `run script --tags=...`) as the query "app mlperf bert _cpu".

    The comma list becomes one query argument where --tags stood; `script` (CM's automation name) before
    it is dropped. --dep.NAME.tags is a dependency override and stays as it is. flags: mlrun's options that take
    no value (the word after one is no option's value).
    """
    out, i, converted = [], 0, None
    while i < len(argv):
        word = argv[i]
        if word == "--tags":   # its value is the next word, never the option after it (--tags --mirror DIR)
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                raise UsageError("--tags needs a value", hint="write --tags=app,mlperf,bert")
            word, i = "--tags=" + argv[i + 1], i + 1
        if word.startswith("--tags="):
            if converted is not None:
                raise UsageError("--tags is given twice", hint="give all tags in one --tags=a,b,c")
            tags = [t.strip() for t in word[len("--tags="):].split(",") if t.strip()]
            if not tags:
                raise UsageError("--tags= is empty", hint="write --tags=app,mlperf,bert")
            out.append(" ".join(tags))
            converted = len(out) - 1
        else:
            out.append(word)
        i += 1
    if converted is not None:
        query = out.pop(converted)
        # the bare words, not the values of global options (`mlrun --cache DIR run script --tags=...`)
        bare = [j for j, w in enumerate(out) if not w.startswith("-") and not (j and out[j - 1] in global_with_value)]
        # A quoted query beside --tags: two queries (it read 'unexpected argument', as if it were not one). A query
        # of words, that is: a verb's own word (mirror fetch, show failed, sweep show NAME) is one word. A word after
        # an option that takes a value is that value (`--question "Who is it?"`).
        given = [out[j] for j in bare if len(out[j].split()) > 1
                 and not (j and out[j - 1].startswith("-") and "=" not in out[j - 1] and out[j - 1] not in flags)]
        if given:
            raise UsageError(f"the query is given twice: as '{given[0]}' and as --tags={query.replace(' ', ',')}",
                             hint="give one of them: the quoted query, or --tags=a,b,_x")
        # `mlrun run script --tags=...`: CM names its automation; mlrun's query is the tags alone.
        script = next((j for j in bare[:2] if out[j] == "script"), None)
        if script is not None:
            del out[script]
            converted -= script < converted
        # The query stays where --tags stood, unless a verb follows it (`mlrun --tags=... plan`).
        verb = next((j for j, w in enumerate(out) if w in verbs and j >= converted), None)
        out.insert(verb + 1 if verb is not None else converted, query)
    return out


def check_verb(argv, verbs, global_with_value, global_options=()):
    """`mlrun shwo cache`: a first word that is no verb, followed by another bare word, is a mistyped verb
    (a query is one argument, so two bare words are never a query and its input). `mlrun --cahce DIR ...`:
    an option before the verb that is near a global one is a typo of it."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        name = argv[i].split("=")[0]
        if name.startswith("--") and name not in global_options and did_you_mean(name, global_options):
            raise UsageError(f"unknown option {name}{did_you_mean(name, global_options)}",
                             hint="mlrun --help lists the options and verbs")
        i += 2 if argv[i] in global_with_value else 1
    if i + 1 < len(argv) and argv[i] not in verbs and " " not in argv[i] and not argv[i + 1].startswith("-"):
        close = nearest(argv[i], verbs)
        if close:
            raise UsageError(f"unknown verb '{argv[i]}'{did_you_mean(argv[i], verbs)}",
                             hint=f"mlrun {close[0]} --help; a query is one quoted argument: \"get dataset squad\"")


def verb_typo_hint(error, query, verbs):
    """A one-word query that matched no recipe but is near a verb: say so in the hint."""
    if not (isinstance(error, ResolutionError) and error.message.startswith("no recipe matches")):
        return error
    if not query or " " in query.strip():
        return error
    close = nearest(query.strip(), verbs)
    if close:
        error.hint = f"'{query}' is near the verb {close[0]}: mlrun {close[0]} ..." + (
            f"; {error.hint}" if error.hint else "")
    return error


ALONE = "--version is mlrun's own option, given alone: mlrun --version"


def option_typo_hint(error, options):
    """`--mirorr DIR` after a query is taken as an input of its recipe ('has no input --mirorr', the hint listing
    the recipe's inputs): where it is near one of mlrun's own options, say that one."""
    m = re.match(r"\S+ has no input (--[\w.-]+)$", error.message) if isinstance(error, ResolutionError) else None
    if m and m[1] == "--version":   # after the query too: "give it after the query" was no help there
        error.message += f" ({ALONE})"
        return error
    if m and m[1] in options:   # `mlrun --json QUERY`: an option of mlrun's, given before the query
        error.message += f" ({m[1]} is an option of mlrun: give it after the query)"
        return error
    close = did_you_mean(m[1], options) if m else ""
    if close:
        error.message += close.replace("(did you mean", "(an option of mlrun: did you mean", 1)
    return error


def options_of(parser):
    """Every --option a parser (and its verbs) takes, for "did you mean"."""
    out = set()
    for action in parser._actions:
        out.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.update(options_of(sub))
    return sorted(out)


def missing_requirement(error):
    """A package of requirements.txt this Python lacks (a teammate ran the checkout's bin/mlrun, whose .venv was
    made by root in a folder they may not enter: bin/mlrun fell back to python3 and said it was a bug of mlrun)."""
    venv = os.environ.get("MLRUN_VENV_UNUSABLE")
    why = f"; the checkout's {venv} cannot be run by this user, so {sys.executable} ran mlrun" if venv else ""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return MlrunError(f"mlrun's requirements are not installed for {sys.executable} (No module named "
                      f"'{error.name}'){why}",
                      hint="install them: python3 -m venv .venv && .venv/bin/pip install -r "
                           f"{os.path.join(root, 'requirements.txt')} (README: Install)"
                           + (", or let this user run the existing one" if venv else ""))
