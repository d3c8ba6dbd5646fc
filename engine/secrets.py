"""Secrets: values that reach a step but never a file mlrun writes, nor a cache key.

A secret is the value of a variable whose name says so (TOKEN, SECRET, PASSWORD, KEY,
CREDENTIAL, or a word PASS, PAT or AUTH of it: DB_PASS, GH_PAT), however it arrives: `--env.NAME=VALUE`, a host variable a recipe passes
(`pass_env`) or hashes (`hash_env`). The resolver puts MASK in the node (a key holds no secret: an --env one
not at all, keys.material leaves it out; a hash_env one as MASK, its recipe says it matters) and remembers the
value here; every
writer of records, entries, logs and scripts passes its text through `scrub`, which also masks the
secrets of any URL (https://user:PASSWORD@host, https://TOKEN@host, ?access_token=...: HF_ENDPOINT, a proxy, an
index). A variable of any name whose value holds such a URL is a secret too, in the node as the URL masked.
"""
import contextlib
import os
import re

MASK = "<redacted>"
# KEY and a plural TOKENS only as whole words of the name: a count of tokens (MAX_INPUT_TOKENS), a KEYBOARD, a
# KEYCLOAK_URL or an AUTH_MODE is none (masked, its value entered no key: another value reused the first build).
SECRET_NAME = re.compile(r"TOKEN(?!IZ|S(_|$))|^TOKENS$|SECRET|PASSW(OR)?D|PASSPHRASE|CREDENTIAL"
                         r"|(^|_)(API_?|PRIVATE_?|ACCESS_?|SECRET_?)?KEYS?(_|$)|APIKEY"
                         r"|(^|_)(PASS|PAT|AUTH)(_|$)(?!(MODE|TYPE|METHOD|LEVEL)$)", re.I)
# ...unless it names where one is kept (HF_TOKEN_PATH, PASSWORD_FILE, a KEY_DIR): a place, which a step's outputs
# may name (masking a tokenizer's folder in its config broke the entry).
PLACE_NAME = re.compile(r"_(PATH|FILE|DIR|DIRECTORY|HOME|CACHE|SOCK)$", re.I)
# A URL's user info (https://user:PASSWORD@host: the password; https://TOKEN@host, as git tokens go: all of it) and
# the values of its query parameters whose names say secret (?access_token=, &api_key=, &sig=, X-Amz-Signature).
URL_USER = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^/\s@]+)(@)", re.I)
URL_PARAM = re.compile(r"([?&;]([^=&#\s/?]+)=)([^&#\s\"',]+)")
# Whole parameter names (keyword=, max_tokens=, sort_key= are none): compared lower case, '-' as '_'.
PARAM_NAMES = {"token", "access_token", "refresh_token", "id_token", "auth_token", "api_token", "private_token",
               "auth", "key", "api_key", "apikey", "secret", "client_secret", "password", "passwd", "pwd", "sig",
               "signature", "x_amz_signature", "x_amz_credential", "x_amz_security_token", "x_goog_signature",
               "x_goog_credential"}
# User info without a password is a token when it looks like one (https://ghp_...@github.com), not a user name
# (ssh://git@github.com, http://proxyuser@proxy): 20 characters or more, a token's prefix, or 12 or more of
# letters and digits mixed (a 15-character token was kept in a record).
TOKEN_USER = re.compile(r".{20,}|(ghp|gho|ghu|ghs|ghr|github_pat|glpat|hf|xox[a-z]|sk)[_-].+"
                        r"|(?=.*[0-9])(?=.*[A-Za-z]).{12,}")
# Shorter values are masked only where their name shows (a variable, an --env flag): replacing every
# "abc" in a record would mangle it (and 8 random characters are not found in a key by chance).
MIN_SCRUBBED = 8

_values = set()


def is_secret(name):
    return bool(SECRET_NAME.search(name)) and not PLACE_NAME.search(name)


def remember(value):
    """A secret value this process knows: scrubbed from everything written from now on."""
    if isinstance(value, str) and value and value != MASK:
        _values.add(value)


def scrub(value):
    """value (text, or lists and dicts of it, as JSON holds) without any secret in it."""
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def scrub_bytes(data):
    """A step's output line without any secret in it (the step may print one: it never reaches a log)."""
    if not _values and b"://" not in data:   # every line of every step passes here
        return data
    return _scrub_text(data.decode(errors="surrogateescape")).encode(errors="surrogateescape")


def _scrub_text(text):
    # Longest first: a secret that contains another is masked whole.
    for secret in sorted(_values, key=len, reverse=True):
        if len(secret) >= MIN_SCRUBBED and secret in text:
            text = text.replace(secret, MASK)
    return mask_urls(text)[0]


def mask_urls(text):
    """(text with the secrets of its URLs masked, [those secrets]): a URL's password, its user info when that is
    a token (TOKEN_USER), the value of a query parameter named as a secret is (PARAM_NAMES)."""
    if "://" not in text:
        return text, []
    found = []

    def user(m):
        name, colon, password = m.group(2).partition(":")
        secret = password if colon else name
        if secret in ("", MASK) or not colon and not TOKEN_USER.fullmatch(name):
            return m.group(0)
        found.append(secret)
        return m.group(1) + (f"{name}:{MASK}" if colon else MASK) + m.group(3)

    def param(m):
        if m.group(2).lower().replace("-", "_") not in PARAM_NAMES or m.group(3) == MASK:
            return m.group(0)
        found.append(m.group(3))
        return m.group(1) + MASK
    return URL_PARAM.sub(param, URL_USER.sub(user, text)), found


def scrub_argv(argv):
    """A command line as it may be recorded: the value of every --env.SECRET flag masked, short ones too."""
    out, mask_next = [], False
    for word in argv:
        name, eq, _ = word.partition("=")
        if mask_next:
            word, mask_next = MASK, False
        elif name.startswith("--env.") and is_secret(name[6:]):
            word, mask_next = (f"{name}={MASK}", False) if eq else (word, True)
        out.append(scrub(word))
    return out


def scrub_message(text, argv):
    """An error's text as printed: it echoes what it was given (`--env.HF_TOKEN is given twice: 'hf_...' and
    'hf_...'`, a URL's password in an input of the wrong type), so the --env.SECRET values of the command line argv
    (as scrub_argv finds them) and every URL's secrets are masked, as in the files mlrun writes."""
    for i, word in enumerate(argv):
        name, eq, value = word.partition("=")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        if name.startswith("--env.") and is_secret(name[len("--env."):]) and value:
            # a short one only where it stands as a value ('abc', =abc): every "a" of the message was masked
            text = text.replace(value, MASK) if len(value) >= MIN_SCRUBBED else re.sub(
                rf"(?<=[='\"]){re.escape(value)}(?=['\"\s]|$)", MASK, text)
    return scrub(text)


def redacted(env, also=()):
    """env as it may be written down: secret-named variables and those in `also` (pass_env) masked."""
    return {k: (MASK if is_secret(k) or k in also else scrub(v)) for k, v in env.items()}


# A step's text outputs searched for the secrets of its environment (its entry or run folder is kept, and a bundle
# carries it): any file up to TEXT_MOST bytes without a NUL byte (text by any name: README, token, conf.py), never
# a model's weights.
TEXT_MOST = 4 << 20


def step_secrets(env):
    """[(secret text, its masked form)] of a step's environment: secret-named values, and the secret parts of
    URLs in any variable (a password in HF_ENDPOINT)."""
    pairs = {value: MASK for key, value in env.items()
             if is_secret(key) and isinstance(value, str) and len(value) >= MIN_SCRUBBED and value != MASK}
    for value in env.values():
        for m in URL_USER.finditer(value if isinstance(value, str) else ""):
            masked = mask_urls(m.group(0))[0]
            if masked != m.group(0):
                pairs[m.group(0)] = masked
        for m in URL_PARAM.finditer(value if isinstance(value, str) and "://" in value else ""):
            masked = mask_urls("x://" + m.group(0))[0][4:]
            if masked != m.group(0):
                pairs[m.group(0)] = masked
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def mask_files(folder, env, skip=(), unmasked=None):
    """Mask in folder's text files (up to TEXT_MOST bytes, no NUL byte) the secrets of the step's env; returns the
    files changed, relative. A model source's record kept HF_ENDPOINT's password, and `export --with-cache` the
    same. unmasked: a list that gets (file, why) of each file holding one that could not be masked."""
    import stat
    pairs = [(secret.encode(), masked.encode()) for secret, masked in step_secrets(env)]
    changed = []
    if not pairs:
        return changed
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(parent, d), folder) not in skip]
        for name in files:
            path = os.path.join(parent, name)
            try:
                st = os.lstat(path)
                if not (stat.S_ISREG(st.st_mode) and st.st_size <= TEXT_MOST):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                if b"\0" in data:   # a binary file: weights, a compiled library
                    continue
                masked = data
                for secret, mask in pairs:
                    masked = masked.replace(secret, mask)
                if masked == data:
                    continue
                # A new file in its place: written in place, a hard link's other name (a user's file, a dep's
                # entry) was masked too.
                tmp = os.path.join(parent, f".mlrun-mask-{os.getpid()}-{name}"[:255])
                mode = os.stat(parent).st_mode
                try:
                    os.chmod(parent, stat.S_IMODE(mode) | stat.S_IWUSR | stat.S_IXUSR)   # a step's read-only folder
                    with open(tmp, "wb") as f:
                        f.write(masked)
                    os.chmod(tmp, stat.S_IMODE(st.st_mode))
                    os.replace(tmp, path)
                except OSError as e:   # the secret stays: said, never skipped in silence
                    if unmasked is not None:
                        unmasked.append((os.path.relpath(path, folder), e.strerror or str(e)))
                    continue
                finally:
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
                    with contextlib.suppress(OSError):
                        os.chmod(parent, stat.S_IMODE(mode))
                changed.append(os.path.relpath(path, folder))
            except OSError:
                continue   # unreadable to mlrun: nothing it can mask
    return changed

