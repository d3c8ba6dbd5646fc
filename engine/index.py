"""Recipe indexes: where the resolver finds recipes.

RecipeIndex reads `recipes/<name>/recipe.yaml` folders and keeps a JSON copy of
the checked recipes (with their digests) in the cache, reused while no recipe
file changed: the warm path then never imports YAML nor re-hashes a script.
MemoryIndex takes recipe data directly, for tests and embedding.
"""
import hashlib
import os
import re
import stat

from . import keys
from .digests import file_digest
from .errors import MlrunError, RecipeError, ResolutionError
from .recipe import SCHEMA_VERSION, normalize
from .shapes import seal, unseal

INDEX_FORMAT = 3   # 2: ctime and inode in the fingerprint; 3: a first line with the body's sha256
SCHEMA_CODE = [os.path.join(os.path.dirname(os.path.abspath(__file__)), f)
               for f in ("recipe.py", "keys.py", "index.py", "yamlfile.py")]
SKIP_FILES = {"__pycache__", ".pytest_cache", ".git", ".hg", ".svn"}   # folders no step's output depends on
# Files likewise: documentation, compiled Python, and what editors and file browsers leave beside what they open
# (vim's .x.swp, emacs's x~ and .#x, macOS's .DS_Store): each made the recipe another digest, a rebuild.
SKIP_FILE = re.compile(r".*\.(md|pyc|sw[a-p])|.*~|\.#.*|#.*#|\.DS_Store")


class MemoryIndex:
    """Recipes given as data: {name: recipe dict as it would stand in YAML}."""

    def __init__(self, recipes):
        self.recipes = []
        for name, data in recipes.items():
            recipe = normalize(data, f"<memory>/{name}", {}, name)
            recipe["digest"] = keys.recipe_digest(recipe)
            self.recipes.append(recipe)
        check_dep_queries(self)


class RecipeIndex:
    def __init__(self, dirs, state_dir=None, check_deps=True):
        # A folder given twice (--recipes d --recipes d/) is read once: its recipes are not defined twice.
        self.dirs = list({os.path.realpath(d): os.path.abspath(d) for d in reversed(dirs)}.values())[::-1]
        self.state_dir = state_dir
        # A run's copy of its recipes holds only those it used: deps it did not take may be absent.
        self.check_deps = check_deps
        self._recipes = None

    @property
    def recipes(self):
        if self._recipes is None:
            self._recipes = self._load()
        return self._recipes

    def _load(self):
        fingerprint = self._fingerprint()
        stored = self._read_stored()
        if stored and stored["fingerprint"] == fingerprint and _sources_unchanged(stored["sources"]):
            return stored["recipes"]
        recipes, sources = self._parse_all(fingerprint)
        self._recipes = recipes
        if self.check_deps:
            check_dep_queries(self)
        self._store(fingerprint, recipes, sources)
        return recipes

    def _fingerprint(self):
        """(path, mtime, size, ctime, inode) of every file in every recipe folder: cheap to take, changes with any
        edit (ctime and inode too: `cp -p`, `rsync -a` or `touch -r` of a same-size edit keep size and mtime).

        The engine's own schema code counts too: an mlrun upgrade re-reads the recipes.
        """
        items = [[p, *_signature(os.stat(p))] for p in SCHEMA_CODE]
        for d in self.dirs:
            if not os.path.isdir(d):
                raise ResolutionError(f"recipe folder {d} " + ("is not a folder" if os.path.exists(d) else
                                                               "does not exist"),
                                      hint="set --recipes DIR or MLRUN_RECIPES to folders that hold recipes")
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                recipe_yaml = os.path.join(entry.path, "recipe.yaml")
                if entry.is_dir() and os.path.lexists(recipe_yaml):
                    _stat_file(recipe_yaml)  # a folder or a dangling link there must not make the recipe vanish
                    for path in recipe_files(entry.path, with_yaml=True):
                        items.append([path, *_signature(_stat_file(path))])
        return items

    def _parse_all(self, fingerprint):
        from . import yamlfile  # the YAML parser is only needed when a recipe changed
        recipes, sources, seen = [], [], {}
        # DIR/NAME/recipe.yaml only: one deeper is a file of recipe NAME (a vendored tool's own recipe.yaml)
        for path in [p for p, *_ in fingerprint if os.path.basename(p) == "recipe.yaml"
                     and os.path.dirname(os.path.dirname(p)) in self.dirs]:
            folder = os.path.dirname(path)
            data, lines = yamlfile.load(path)
            recipe = normalize(data, path, lines, os.path.basename(folder))
            from packaging.version import Version   # 1.0 and 1.0.0 are one version (PEP 440): one was taken unsaid
            ident = (recipe["name"], Version(recipe["version"]))
            if ident in seen:
                raise RecipeError(f"recipe {recipe['name']} {recipe['version']} is also defined in {seen[ident][0]}"
                                  + (f" (as version {seen[ident][1]}, the same)" if seen[ident][1] != recipe["version"]
                                     else ""), path, 1, "give one of them another name or version")
            seen[ident] = (path, recipe["version"])
            files = {os.path.relpath(p, folder): file_digest(p) for p in recipe_files(folder)}
            for i, rel in enumerate(recipe["sources"]):
                src = os.path.normpath(os.path.join(folder, rel))
                if not os.path.isfile(src):   # /dev/zero or a FIFO was "does not exist" (and would hang the hashing)
                    raise RecipeError(f"source '{rel}' is a folder, not a file" if os.path.isdir(src) else
                                      f"source '{rel}' is no regular file (a FIFO, socket or device)"
                                      if os.path.exists(src) else f"source file '{rel}' does not exist", path,
                                      recipe["lines"].get(f"sources/{i}") or recipe["lines"].get("sources"))
                files[rel] = file_digest(src)
                sources.append([src, *_signature(os.stat(src))])
            recipe["digest"] = keys.recipe_digest(recipe, files)
            recipe["files"] = files   # after the digest: entries keep it so `explain` can name a changed file
            recipes.append(recipe)
        return recipes, sources

    def _stored_path(self):
        if not self.state_dir:
            return None
        tag = hashlib.sha256("\0".join(self.dirs).encode()).hexdigest()[:16]
        return os.path.join(self.state_dir, f"recipes-{tag}.json")

    def _read_stored(self):
        """The stored index, or None: missing, of another format, or not as written (its body's sha256 differs:
        an edited or damaged copy said "unexpected TypeError ... a bug" in every plan; the recipes are read again)."""
        path = self._stored_path()
        try:
            with open(path, "rb") as f:
                head, stored = unseal(f)
        except (TypeError, OSError, ValueError):
            return None
        if head.get("format") != [INDEX_FORMAT, SCHEMA_VERSION, keys.KEY_SCHEMA] or not isinstance(stored, dict):
            return None
        return stored

    def _store(self, fingerprint, recipes, sources):
        path = self._stored_path()
        if not path:
            return
        if not os.path.isdir(os.path.dirname(self.state_dir)):
            return   # no cache yet: reading recipes makes none (`show cache` of a typo made the folder)
        try:
            from .cache import shared_dir
            shared_dir(os.path.dirname(path), top=os.path.dirname(self.state_dir))   # the group's: teammates' runs store and read theirs there too
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(seal({"format": [INDEX_FORMAT, SCHEMA_VERSION, keys.KEY_SCHEMA]},
                             {"fingerprint": fingerprint, "sources": sources, "recipes": recipes}))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs speed


def check_dep_queries(index):
    """Every dep query must name one recipe and only variations it has: report file and line now."""
    from .resolver import Resolver
    resolver = Resolver(index)
    for recipe in index.recipes:
        deps = [(d, f"deps/{i}") for i, d in enumerate(recipe["deps"])]
        for vname, v in recipe["variations"].items():
            deps += [(d, f"variations/{vname}") for d in v["deps"]]
        for dep, where in deps:
            if "{" in dep["query"]:
                continue  # holds a parametric value, known only when chosen (checked then: Resolver.check_dep)
            try:
                resolver.check_dep(dep, dep["query"])
            except ResolutionError as e:
                line = dep.get("line") or recipe["lines"].get(where)
                raise RecipeError(f"dep '{dep['query']}': {e.message}", recipe["path"], line,
                                  _dep_hint(index, e, dep["query"])) from None


def shipped_hint(dirs, query):
    """Where the recipe folders leave out mlrun's own and one of those would answer `query`: how to name both
    (--recipes DIR alone replaces them, and a query of theirs said only 'unknown tag'); else None."""
    from .settings import CHECKOUT
    shipped = os.path.realpath(os.path.join(CHECKOUT, "recipes"))
    if os.path.isdir(shipped) and shipped not in {os.path.realpath(d) for d in dirs} and _matches_in(shipped, query):
        return (f"the recipe folders are {', '.join(dirs)}: --recipes (or MLRUN_RECIPES) replaces mlrun's own "
                f"{shipped}; name it too (--recipes {shipped} --recipes DIR, or MLRUN_RECIPES={shipped}:DIR)")
    return None


def layout_hint(dirs):
    """What in the recipe folders' layout hides recipes (a query said only "no recipe matches"): a folder that is
    a recipe's own (its recipe.yaml directly inside), a recipe.yml, a folder with no recipe; else None."""
    for d in dirs:
        if os.path.isfile(os.path.join(d, "recipe.yaml")):
            return (f"{d} is a recipe's own folder: --recipes (or MLRUN_RECIPES) names the folder that holds recipe "
                    f"folders ({os.path.dirname(os.path.abspath(d))})")
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        yml = [n for n in names if os.path.isfile(os.path.join(d, n, "recipe.yml"))]
        if yml:
            return f"{os.path.join(d, yml[0], 'recipe.yml')}: a recipe is read from recipe.yaml (rename it)"
        if not any(os.path.isfile(os.path.join(d, n, "recipe.yaml")) for n in names):
            return f"no recipes in {d}: a recipe is {d}/NAME/recipe.yaml (docs/recipes.md)"
    return None


def _dep_hint(index, error, query):
    """Every command reads every recipe folder, so `mlrun find` (the resolver's hint) failed the same way."""
    if error.message.startswith("no recipe matches") and (hint := shipped_hint(index.dirs, query)):
        return hint
    near = (error.hint or "").removesuffix("`mlrun find TAG` lists recipes").rstrip("; ")
    return (f"{near}; " if near else "") + "every command reads every recipe in the recipe folders: mend this dep, " \
        "or move its recipe out of them while it is unfinished"


def _matches_in(folder, query):
    """Whether a recipe of `folder` answers `query` (an error's hint only: never raises)."""
    from .resolver import Resolver
    try:
        Resolver(RecipeIndex([folder], check_deps=False)).select(query)
        return True
    except MlrunError:
        return False


def recipe_files(folder, with_yaml=False):
    """The files a recipe's digest covers: all in its folder, through links to folders too (a linked tools/
    folder was left out, and an edit there reused the old entry), but for its recipe.yaml and SKIP_FILE."""
    out = []
    top = os.path.join(folder, "recipe.yaml")
    for root, dirs, files in os.walk(folder, followlinks=True):
        if root != folder and os.path.islink(root):
            target, holder = os.path.realpath(root), os.path.realpath(os.path.dirname(root))
            if holder == target or holder.startswith(target + os.sep):
                raise RecipeError(f"{root} is a link to a folder it is in (a loop)", top,
                                  hint="link to the files or folders the step needs, not to one that holds the link")
        dirs[:] = sorted(d for d in dirs if d not in SKIP_FILES)
        for name in sorted(files):
            path = os.path.join(root, name)
            if (path == top and not with_yaml) or SKIP_FILE.fullmatch(name):
                continue
            out.append(path)
    return out


def _stat_file(path):
    """os.stat of a file in a recipe folder: it must be a regular file (a FIFO would hang its hashing)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise RecipeError(f"cannot read this file: {e.strerror}"
                          + (" (a symbolic link to nothing)" if os.path.islink(path) else ""), path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise RecipeError(f"this is {kind}, not a regular file", path)
    return st


def _signature(st):
    return [st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino]


def _sources_unchanged(sources):
    try:
        return all(_signature(os.stat(p)) == signature for p, *signature in sources)
    except OSError:
        return False
