"""The cache as a person sees it: what tells entries apart, which entries a word names, failed builds by kind.

`show cache` rows of one recipe differ by their inputs (a venv by its packages): `details` says how in a
few words. `rm cache WORD` takes an entry's folder name or path, a key prefix, or a query matched the way
the resolver matches one (all its tags are tags of the entry's recipe; a recipe whose tags are exactly the
query's wins over one that only has them too). Failed builds are told apart from interrupted and killed ones.
"""
import os
import re

from .errors import MlrunError, UsageError
from .resolver import has_tags, parse_query
from .words import plural

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)\s*(?:===?|~=|>=|<=|!=|<|>)")


def _names(text):
    return [(PIN.match(p).group(1) if PIN.match(p) else p) for p in str(text).split()]


def _short_packages(text, common=frozenset(), most=4):
    """'numpy==2.3.4 onnx==1.19.1 ...' -> 'numpy onnx onnxruntime +13' (names only: versions are pinned),
    the names its siblings do not all have first: they are what tells two venvs apart."""
    names = _names(text)
    names = [n for n in names if n not in common] + [n for n in names if n in common]
    return " ".join(names[:most]) + (f" +{len(names) - most}" if len(names) > most else "")


def common_packages(entries):
    """{recipe: package names every shown entry of that recipe has} (recipes shown more than once)."""
    sets = {}
    for m in entries:
        packages = (m.get("inputs") or {}).get("packages")
        if packages:
            sets.setdefault(m.get("recipe"), []).append(set(_names(packages)))
    return {r: frozenset(set.intersection(*s)) for r, s in sets.items() if len(s) > 1}


# The dep an entry was made from (a quantised or fused model's fp32 source): its details are the entry's too
MADE_FROM = ("source", "unfused")


def details(meta, recipes_by_name, common=None, width=48, by_key=None):
    """The inputs of an entry that are not its recipe's defaults, in short: what tells it from its siblings
    (common: common_packages() of the entries shown with it), then what it was made from (by_key: {key: meta}
    of the cache; int8 models of two sources looked alike)."""
    words = [_own(meta, recipes_by_name, common)]
    deps = dict(((meta.get("node") or {}).get("deps") or []))
    made_from = next((by_key[deps[n]] for n in MADE_FROM if deps.get(n) in (by_key or {})), None)
    if made_from is not None:
        source = " ".join("_" + v for v in made_from.get("variations", [])) or made_from.get("recipe", "?")
        own = _own(made_from, recipes_by_name, common)
        words = [w for w in words if w != "-"] + [f"from {source}" + (f" {own}" if own != "-" else "")]
    out = "; ".join(words)
    return out if width is None or len(out) <= width else out[:width - 3] + "..."


def _own(meta, recipes_by_name, common):
    recipe = recipes_by_name.get(meta.get("recipe"))
    defaults = {k: s["default"] for k, s in recipe["inputs"].items()} if recipe else {}
    words = []
    for name, value in (meta.get("inputs") or {}).items():
        # 0 is a value (`in (None, "", False)` took it for False: secs=0 and secs=3 entries both read "-")
        if value is None or value == "" or (value is False and not defaults.get(name)) or \
                (name in defaults and value == defaults[name]):
            continue
        text = _short_packages(value, (common or {}).get(meta.get("recipe"), frozenset())) \
            if name == "packages" or PIN.match(str(value)) else str(value)
        if name in ("path", "model") and os.sep in text:
            text = os.path.basename(text)
        keyed = ((meta.get("material") or {}).get("inputs") or {}).get(name)
        if isinstance(keyed, str) and keyed.startswith("sha256:") and keyed != value:
            text += f" ({keyed[:19]})"   # a content-keyed file: nine --model entries all read path=model.onnx
        words.append(f"{name}={text}" if name != "packages" else text)
    # --env overrides: in the key, in no input (three venvs of other OMP_NUM_THREADS or ISA caps read alike)
    declared = set((recipe or {}).get("env") or {}).union(
        *[(v.get("env") or {}) for v in ((recipe or {}).get("variations") or {}).values()])
    env = (meta.get("material") or {}).get("env") or {}
    words += [f"env.{k}={v}" for k, v in sorted(env.items()) if recipe and k not in declared]
    return "; ".join(words) or "-"


def recipes_by_name(settings):
    """{name: recipe} of the configured recipe folders; {} when they cannot be read (the cache still shows)."""
    try:
        return {r["name"]: r for r in settings.index().recipes}
    except MlrunError:
        return {}


def matching(entries, query, recipes):
    """Entries whose recipe has all the query's tags (or aliases) and every variation it names."""
    tags, variations = parse_query(query)
    out = []
    for m in entries:
        have = set(m.get("variations", []))
        aliases = (recipes.get(m.get("recipe")) or {}).get("aliases", ())
        if has_tags(tags, m.get("tags", []), m.get("recipe"), aliases) and \
                all(v in have or any(h.split(".")[0] == v for h in have) for v in variations):
            out.append(m)
    return out


def near_tags(entries, query):
    """Tags of the entries near a word of the query that none of them has: the word inside a tag
    (model: ml-model) or a tag a typo away (bret: bert)."""
    from .words import nearest
    words, variations = parse_query(query)
    have = sorted({t for m in entries for t in m.get("tags", [])})
    near = sorted({t for word in words if word not in have
                   for t in [t for t in have if word in t] + nearest(word, have)})
    # likewise a variation (_randm: _random), after the tags
    chosen = sorted({"_" + v.split(".")[0] for m in entries for v in m.get("variations", [])})
    return near + sorted({v for word in variations if "_" + word.split(".")[0] not in chosen
                          for v in nearest("_" + word.split(".")[0], chosen)})


def unknown_words(query, recipes):
    """The query's tags and variations that no recipe has ([] where the recipes cannot be read: none known)."""
    if not recipes:
        return []
    tags, variations = parse_query(query)
    known = {t for name, r in recipes.items() for t in [name, *r.get("tags", ()), *r.get("aliases", ())]}
    chosen = {v.split(".")[0] for r in recipes.values() for v in r.get("variations") or {}}
    return [t for t in tags if t not in known] + [f"_{v}" for v in variations if v.split(".")[0] not in chosen]


def to_remove(cache, word, recipes, confirmed, left_out=None):
    """The entries `rm cache WORD` means: a folder name or path, a key prefix, else a query as the resolver
    reads it. Several recipes left by a query: a UsageError listing them unless `confirmed` (-y). left_out: a list
    that gets the recipes whose entries `show cache WORD` lists and the query's exact tags leave out."""
    from .cache import read_entry
    path = os.path.abspath(word) if os.sep in word else os.path.join(cache.root, word)
    named = read_entry(path)
    if named:
        return [named], True
    if os.path.isdir(path) and cache.private(path):   # a teammate's, made private: it was called damaged
        from .cache import private_entry
        raise private_entry(path)
    if os.path.dirname(os.path.realpath(path)) == os.path.realpath(cache.root) and cache.is_damaged(path):
        return [{"path": path, "recipe": "(damaged: its .mlrun/entry.json is missing or unreadable)",
                 "damaged": True}], True
    entries = cache.entries()
    if re.fullmatch(r"[0-9a-f]{4,64}", word):
        by_key = [m for m in entries if m.get("key", "").startswith(word)]
        if by_key:
            return by_key, False
    found = matching(entries, word, recipes)
    names = sorted({m.get("recipe") for m in found})
    if len(names) > 1:
        tags, _ = parse_query(word)
        # As the resolver does: "get dataset squad" names the recipe tagged exactly so, not "... features".
        exact = [m for m in found if set(m.get("tags", [])) <= set(tags) | set(
            (recipes.get(m.get("recipe")) or {}).get("aliases", ()))]
        if len({m.get("recipe") for m in exact}) == 1:
            if left_out is not None:
                left_out += [n for n in names if n != exact[0].get("recipe")]
            return exact, False
        if not confirmed:
            raise UsageError(f"'{word}' matches entries of {plural(len(names), 'recipe')}: {', '.join(names)}",
                             hint="add a tag that only one of them has, name an entry (its folder or key prefix), "
                                  "or pass -y to remove them all")
    return found, False


def failed_kind(log_path):
    """failed, interrupted or killed, from the folder name the cache gave the kept log."""
    folder = os.path.basename(os.path.dirname(log_path))
    for kind in ("interrupted", "killed"):
        if re.search(rf"-{kind}(-\d+)?$", folder):
            return kind
    return "failed"


KIND_WORDS = {"failed": "failed (the step exited with an error)",
              "interrupted": "interrupted (Ctrl-C or a signal stopped mlrun)",
              "killed": "killed (mlrun died while building: found by the next build of that entry)"}
