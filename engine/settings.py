"""Where things live: recipe folders, the cache, the run folders, the download mirror.

Defaults are inside the checkout (recipes/, cache/, runs/); each can be moved by an
environment variable or a command-line option, the option winning.
"""
import os

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Settings:
    def __init__(self, recipes=None, cache=None, runs=None, mirror=None):
        self.recipes = recipes or [os.path.join(CHECKOUT, "recipes")]
        self.cache = cache or os.path.join(CHECKOUT, "cache")
        self.runs = runs or os.path.join(CHECKOUT, "runs")
        self.mirror = mirror

    @classmethod
    def from_env(cls, environ=None, cache=None, runs=None, recipes=None, mirror=None):
        environ = os.environ if environ is None else environ
        for name in ("MLRUN_CACHE", "MLRUN_RUNS", "MLRUN_MIRROR", "MLRUN_RECIPES"):
            if environ.get(name) and not environ[name].strip():   # else a folder named ' ' in the checkout
                from .errors import UsageError
                raise UsageError(f"{name} is blank ({environ[name]!r})", hint=f"unset {name}, or set it to a folder")
        s = cls()
        if recipes or environ.get("MLRUN_RECIPES"):
            s.recipes = [_path(r) for r in (recipes or environ["MLRUN_RECIPES"].split(os.pathsep))]
        s.cache = _path(cache or environ.get("MLRUN_CACHE") or s.cache)
        s.runs = _path(runs or environ.get("MLRUN_RUNS") or s.runs)
        mirror = mirror or environ.get("MLRUN_MIRROR")
        s.mirror = _path(mirror) if mirror else None
        return s

    def index(self):
        from .index import RecipeIndex
        return RecipeIndex(self.recipes, state_dir=os.path.join(self.cache, ".index"))

    def prober(self):
        from .probes import Prober
        return Prober(self.cache, self.mirror)


def _path(path):
    """Absolute, with a leading ~ made the home folder: the shell leaves --cache=~/x as it is (a folder '~' was
    made in the current one)."""
    return os.path.abspath(os.path.expanduser(path))
