"""Secrets (issue 8): no file mlrun writes holds a secret, no key depends on one, and the step still gets it."""
import hashlib
import io
import json
import os
import tarfile

import pytest

MASK = "<redacted>"   # what records show in a secret's place

# Distinctive values, one per way a secret arrives.
BY_ENV_FLAG = "hf_EnvFlagSecret_7f3a9c"        # --env.HF_TOKEN=...
BY_KEY_NAME = "KeyNamedSecret_51d0e2"           # --env.MY_API_KEY=... (a KEY name), also expanded into argv
BY_PASS_ENV = "PassEnvTokenSecret_c4b8aa"       # host GH_TOKEN, listed in pass_env
BY_PASS_PLAIN = "PlainPassEnvValue_93e1f0"      # host MY_PASSTHRU, listed in pass_env (no secret-like name)
SHORT = "xq9"                                   # --env.DB_PASSWORD=xq9: too short to scrub by value
BY_PAT = "ghp_PersonalAccess_2b7d11"            # --env.GH_PAT=... (a word PAT of the name): was written as given
BY_PASS = "DbPassWordValue_6e02c9"              # --env.DB_PASS=... (a word PASS): likewise
IN_URL = "UrlUserPassword_0d4e7a"               # --env.HF_ENDPOINT=https://user:...@host: a URL's password
ALL = [BY_ENV_FLAG, BY_KEY_NAME, BY_PASS_ENV, BY_PASS_PLAIN, BY_PAT, BY_PASS, IN_URL]


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def tok_ws(ws):
    ws.recipe("dep-tok", """
        tags: [dep, tok]
        pass_env: [GH_TOKEN, MY_PASSTHRU]
        run: |
          echo "logged in with $HF_TOKEN, $GH_TOKEN and $MY_API_KEY"   # a step may print one: no log keeps it
          for v in HF_TOKEN MY_API_KEY GH_TOKEN MY_PASSTHRU DB_PASSWORD; do
            printf '%s %s\\n' "$v" "$(printf %s "${!v}" | sha256sum | cut -d' ' -f1)" >> seen.txt
          done
        exports: {SEEN: "{entry}/seen.txt"}
    """)
    ws.recipe("app-tok", """
        tags: [app, tok]
        cache: false
        deps: [{name: dep, query: dep tok}]
        pass_env: [MY_PASSTHRU]
        env: {SESSION_TOKEN: "s-${MY_PASSTHRU}"}   # a secret made from a plain variable
        run: [bash, -c, 'printf %s "$1" | sha256sum | cut -d" " -f1 > arg.txt; printf %s "$2" | sha256sum | cut -d" " -f1 > arg2.txt; cp "$SEEN" .',
              _, "key=${MY_API_KEY}", "${SESSION_TOKEN}"]
    """)
    return ws


def run_with_secrets(ws, *extra, token=BY_ENV_FLAG):
    env = ws.env(GH_TOKEN=BY_PASS_ENV, MY_PASSTHRU=BY_PASS_PLAIN)
    return ws.mlrun(*extra, f"--env.HF_TOKEN={token}", f"--env.MY_API_KEY={BY_KEY_NAME}",
                    f"--env.DB_PASSWORD={SHORT}", f"--env.GH_PAT={BY_PAT}", f"--env.DB_PASS={BY_PASS}",
                    f"--env.HF_ENDPOINT=https://user:{IN_URL}@hf.example.org/mirror", env=env)


def files_under(*roots):
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    with open(path, "rb") as f:
                        yield path, f.read()


def test_no_secret_in_any_file_or_bundle_and_the_step_saw_them(tok_ws):
    ws = tok_ws
    r = run_with_secrets(ws, "app tok", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # The step received the real values (it wrote their hashes, never the values).
    with open(os.path.join(out["path"], "seen.txt")) as f:
        seen = dict(line.split() for line in f)
    assert seen == {"HF_TOKEN": sha(BY_ENV_FLAG), "MY_API_KEY": sha(BY_KEY_NAME), "GH_TOKEN": sha(BY_PASS_ENV),
                    "MY_PASSTHRU": sha(BY_PASS_PLAIN), "DB_PASSWORD": sha(SHORT)}
    with open(os.path.join(out["path"], "arg.txt")) as f:
        assert f.read().strip() == sha("key=" + BY_KEY_NAME)   # the argv item held the real value
    with open(os.path.join(out["path"], "arg2.txt")) as f:
        assert f.read().strip() == sha("s-" + BY_PASS_PLAIN)

    bundle = os.path.join(ws.root, "run.tar.gz")
    r = ws.mlrun("export", out["run"], "-o", bundle, "--with-cache")
    assert r.returncode == 0, r.stderr
    assert ws.mlrun("runs").returncode == 0   # the rows it keeps (runs/.index/) are written too
    written = list(files_under(ws.cache, ws.runs))
    with tarfile.open(bundle) as tar:
        written += [(f"bundle:{m.name}", tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    names = {os.path.basename(p) for p, _ in written}
    assert {"entry.json", "files.json", "env.sh", "command.sh", "build.log", "run.json", "step.json",
            f"rows-{os.getuid()}.json"} <= names
    leaks = [(path, s) for path, data in written for s in ALL if s.encode() in data]
    assert not leaks, leaks
    # The short one is masked wherever its name shows: argv (--env.DB_PASSWORD=...), env, overrides.
    record = json.loads(next(d for p, d in written if p.endswith("run.json") and not p.startswith("bundle")))
    assert f"--env.DB_PASSWORD={MASK}" in record["argv"]
    assert record["request"]["env_overrides"] == {"HF_TOKEN": MASK, "MY_API_KEY": MASK, "DB_PASSWORD": MASK,
                                                  "GH_PAT": MASK, "DB_PASS": MASK,
                                                  "HF_ENDPOINT": f"https://user:{MASK}@hf.example.org/mirror"}
    step_json = json.loads(next(d for p, d in written if p.endswith("step.json") and not p.startswith("bundle")))
    assert step_json["command"][-2:] == [f"key={MASK}", MASK]
    entry = json.loads(next(d for p, d in written if p.endswith("entry.json") and not p.startswith("bundle")))
    assert entry["env"]["DB_PASSWORD"] == entry["env"]["MY_PASSTHRU"] == entry["env"]["GH_TOKEN"] == MASK


def test_keys_do_not_depend_on_secret_values(tok_ws):
    ws = tok_ws
    r = run_with_secrets(ws, "app tok")
    assert r.returncode == 0, r.stderr
    plans = []
    for token in ("hf_OneToken_aaaaaaaa", "hf_AnotherToken_bbbbbbbb"):
        r = run_with_secrets(ws, "plan", "app tok", "--json", token=token)
        assert r.returncode == 0, r.stderr
        plans.append(json.loads(r.stdout)["nodes"])
    assert [n["key"] for n in plans[0]] == [n["key"] for n in plans[1]]
    dep = plans[0][0]
    assert dep["status"] == "cached"   # the entry built with the first token serves another token
    # Nor whether one was given: a token grants access, it does not change what is built (was: the mask was hashed,
    # so the first token given made every node of a plan, venvs included, another entry)
    assert "HF_TOKEN" not in dep["material"]["env"]
    none = ws.mlrun("plan", "dep tok", "--json", "--env.HF_ENDPOINT=https://user:AnotherOne_99@hf.example.org/mirror",
                    env=ws.env(GH_TOKEN=BY_PASS_ENV, MY_PASSTHRU=BY_PASS_PLAIN))
    assert none.returncode == 0, none.stderr
    assert json.loads(none.stdout)["nodes"][0]["status"] == "cached"


def test_secret_named_hash_env_is_hashed_as_given_not_by_value(ws):
    ws.recipe("h", """
        tags: [h]
        hash_env: [SERVICE_CREDENTIAL]
        run: printf %s "$SERVICE_CREDENTIAL" | sha256sum > seen.txt
    """)
    keys = []
    for value in ("CredentialOne_111111", "CredentialTwo_222222"):
        r = ws.mlrun("h", "--json", env=ws.env(SERVICE_CREDENTIAL=value))
        assert r.returncode == 0, r.stderr
        path = json.loads(r.stdout)["path"]
        keys.append(json.loads(r.stdout)["steps"][0]["key"])
        with open(os.path.join(path, "seen.txt")) as f:
            assert f.read().split()[0] == sha("CredentialOne_111111")   # built once, by the first value
    assert keys[0] == keys[1]
    leaks = [p for p, data in files_under(ws.cache, ws.runs) if b"CredentialOne_111111" in data]
    assert not leaks, leaks


def test_scrub_masks_embedded_values_and_secret_flags():
    from engine import secrets
    assert secrets.MASK == MASK
    secrets.remember("EmbeddedValue_424242")
    assert secrets.scrub({"a": ["x EmbeddedValue_424242 y"], "n": 3}) == {"a": [f"x {MASK} y"], "n": 3}
    assert secrets.scrub("tokenizers==0.23.3 key=abc") == "tokenizers==0.23.3 key=abc"   # names alone mask nothing
    assert secrets.scrub_argv(["mlrun", "q", "--env.X_SECRET=ef", "--env.api_key", "gh", "--count=3", "--env.A=b"]) \
        == ["mlrun", "q", f"--env.X_SECRET={MASK}", "--env.api_key", MASK, "--count=3", "--env.A=b"]
    assert secrets.redacted({"PATH": "/bin", "aws_secret_access_key": "z", "PLAIN": "v"}, also=("PLAIN",)) == \
        {"PATH": "/bin", "aws_secret_access_key": MASK, "PLAIN": MASK}


def test_a_replayed_mask_takes_the_secret_from_the_host():
    """A record holds --env secrets masked: resolving it again gets the value from the host's variable."""
    from engine.index import MemoryIndex
    from engine.errors import ResolutionError
    from engine.resolver import resolve
    index = MemoryIndex({"r": {"tags": ["r"], "run": "true"}})
    given = resolve(index, "r", env_overrides={"HF_TOKEN": "hf_GivenOnTheCommandLine"})
    again = resolve(index, "r", env_overrides=given.request["env_overrides"], host_env={"HF_TOKEN": "hf_FromHost1"})
    assert given.request["env_overrides"] == {"HF_TOKEN": MASK}
    assert again.root.key == given.root.key and again.root.secret_env == {"HF_TOKEN": "hf_FromHost1"}
    assert "secret_env" not in again.root.to_dict()
    # Not set here: an error, never the mask passed on as the secret (was: the step got '<redacted>')
    with pytest.raises(ResolutionError, match="--env.HF_TOKEN was given a secret, which the record does not keep; "
                                              "set HF_TOKEN here"):
        resolve(index, "r", env_overrides=given.request["env_overrides"], host_env={})
    # every one missing said at once (a replay asked for one at a time: three failures for three)
    many = resolve(index, "r", env_overrides={"HF_TOKEN": "hf_GivenOnTheCommandLine", "MY_PASSWORD": "pw-Given-123",
                                              "HF_ENDPOINT": "http://user:UrlPass_4242@127.0.0.1:9/"})
    with pytest.raises(ResolutionError) as caught:
        resolve(index, "r", env_overrides=many.request["env_overrides"], host_env={"HF_TOKEN": "hf_FromHost1"})
    assert "HF_TOKEN" not in caught.value.message.split(";")[0]
    assert "set MY_PASSWORD here" in caught.value.message and "set HF_ENDPOINT here" in caught.value.message
    assert "export MY_PASSWORD=...; export HF_ENDPOINT=..." in caught.value.hint


URL_SECRETS = {   # variable: (URL with a secret, what it was written as before: in keys, records, env.sh, bundles)
    "PIP_EXTRA": "https://bob:{}@pypi.example.com/simple",         # masked in files, but hashed: a key per password
    "GIT_REMOTE": "https://{}@github.com/org/repo.git",            # a token as user info: written in clear
    "HUB": "https://hub.example.com/api?x=1&access_token={}",       # a secret-named query parameter: in clear
}


def test_url_secrets_of_any_variable_stay_out_of_keys_and_files_and_reach_the_step(ws):
    ws.recipe("u", """
        tags: [u]
        hash_env: [HF_ENDPOINT]
        run: |
          for v in PIP_EXTRA GIT_REMOTE HUB HF_ENDPOINT; do
            printf '%s %s\\n' "$v" "$(printf %s "${!v}" | sha256sum | cut -d' ' -f1)" >> seen.txt
          done
    """)
    keys = []
    for n in ("One_1111111111", "Two_2222222222"):
        flags = [f"--env.{name}={url.format('UrlSecret' + n)}" for name, url in URL_SECRETS.items()]
        r = ws.mlrun("u", "--json", *flags, env=ws.env(HF_ENDPOINT=f"https://me:HostUrlSecret{n}@hf.example.org"))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        keys.append(out["steps"][0]["key"])
    assert keys[0] == keys[1]   # the second run's passwords served by the first's entry: keys hold no secret
    with open(os.path.join(out["path"], "seen.txt")) as f:
        seen = dict(line.split() for line in f)
    assert seen == {**{name: sha(url.format("UrlSecretOne_1111111111")) for name, url in URL_SECRETS.items()},
                    "HF_ENDPOINT": sha("https://me:HostUrlSecretOne_1111111111@hf.example.org")}
    bundle = os.path.join(ws.root, "run.tar.gz")
    assert ws.mlrun("export", out["run"], "-o", bundle, "--with-cache").returncode == 0
    written = list(files_under(ws.cache, ws.runs))
    with tarfile.open(bundle) as tar:
        written += [(f"bundle:{m.name}", tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    leaks = [p for p, data in written if b"UrlSecret" in data]
    assert not leaks, leaks
    record = json.loads(next(d for p, d in written if p.endswith("run.json") and not p.startswith("bundle")))
    assert record["request"]["env_overrides"] == {"PIP_EXTRA": f"https://bob:{MASK}@pypi.example.com/simple",
                                                  "GIT_REMOTE": f"https://{MASK}@github.com/org/repo.git",
                                                  "HUB": f"https://hub.example.com/api?x=1&access_token={MASK}"}


@pytest.mark.slow   # about 1.3 s on the EPYC
def test_a_url_secret_given_as_an_input_enters_no_key_no_output_and_no_replay(ws):
    """An input's URL password: each one another key (a rotated token built everything again), plan and explain
    printed it, an error echoed it, a sweep of it could not resume (its record scrubbed, compared raw), and a replay
    gave the step the literal "<redacted>", called exact (a user's trial)."""
    ws.recipe("inp", """
        tags: [inp]
        inputs:
          url: {default: "https://example.org/x"}
        run: printf %s "$MLRUN_INPUT_URL" | sha256sum | cut -c1-16 > seen.txt
    """)
    ws.recipe("pt", "tags: [pt]\ncache: false\ninputs:\n  url: {}\nrun: echo hi > out.txt\n")
    one, two = "https://alice:InputPw_1111111111@h.example/p", "https://alice:InputPw_2222222222@h.example/p"
    plans = [ws.mlrun("plan", "inp", f"--url={url}", "--json") for url in (one, two)]
    assert [json.loads(p.stdout)["nodes"][-1]["key"] for p in plans][0] == \
        json.loads(plans[1].stdout)["nodes"][-1]["key"]   # another password: the same entry
    shown = [ws.mlrun("plan", "inp", f"--url={one}"), ws.mlrun("explain", "inp", f"--url={one}"), plans[0],
             ws.mlrun("plan", "inp", "--env.HF_TOKEN=hf_TwiceTokenAAAA1", "--env.HF_TOKEN=hf_TwiceTokenBBBB2"),
             ws.mlrun("plan", "inp", f"--url={one}", f"--url={two}")]
    assert not [s.args for s in shown if "InputPw" in s.stdout + s.stderr or "TwiceToken" in s.stdout + s.stderr]
    assert f"--url=https://alice:{MASK}@h.example/p" in shown[0].stdout
    run = ws.mlrun("inp", f"--url={one}", "--json")
    assert run.returncode == 0, run.stderr
    assert open(os.path.join(json.loads(run.stdout)["path"], "seen.txt")).read().strip() == sha(one)[:16]
    refused = ws.mlrun("replay", json.loads(run.stdout)["run"])
    assert refused.returncode == 2 and "was given a secret its record does not keep (--url=https://alice:" \
        f"{MASK}@h.example/p)" in refused.stderr, refused.stderr
    grid = ["--grid", "url=https://u:SweepPw_AAAA1111@h/,https://u:SweepPw_BBBB2222@k/", "--name", "s"]
    assert ws.mlrun("sweep", "pt", *grid).returncode == 0
    again = ws.mlrun("sweep", "pt", *grid)   # resumed: it said "exists with another grid", the secrets printed
    assert again.returncode == 0 and "2 skipped" in again.stderr and "SweepPw" not in again.stderr, again.stderr
    assert not [p for p, data in files_under(ws.cache, ws.runs) if b"InputPw" in data or b"SweepPw" in data]


def test_a_secret_a_step_writes_into_its_entry_or_run_folder_is_masked_there(ws):
    """A model source's record (source.json) kept HF_ENDPOINT's password, and `export --with-cache` carried it."""
    ws.recipe("src", """
        tags: [src]
        pass_env: [HUB_URL, MY_TOKEN]
        run: |
          printf '{"endpoint": "%s", "token": "%s"}\\n' "$HUB_URL" "$MY_TOKEN" > source.json
          printf 'weights\\0%s' "$MY_TOKEN" > model.bin
          for f in README token conf.py notes.jsonl; do echo "t=$MY_TOKEN" > $f; done
    """)
    ws.recipe("app", """
        tags: [app]
        cache: false
        pass_env: [HUB_URL]
        deps: [src]
        run: echo "$HUB_URL" > summary.txt
    """)
    env = ws.env(HUB_URL="http://hubuser:HubPassw0rd99@127.0.0.1:9/x?access_token=ParamTok3n42", MY_TOKEN="tok-Secret-4242")
    r = ws.mlrun("app", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert "masked there" in r.stderr
    out = json.loads(r.stdout)
    [entry] = ws.entries("src")
    source = json.load(open(os.path.join(ws.cache, entry, "source.json")))
    assert source == {"endpoint": f"http://hubuser:{MASK}@127.0.0.1:9/x?access_token={MASK}", "token": MASK}
    assert open(os.path.join(ws.cache, entry, "model.bin")).read() == "weights\0tok-Secret-4242"   # no text: as made
    for name in ("README", "token", "conf.py", "notes.jsonl"):   # text by any name (only .json, .txt, ... were)
        assert open(os.path.join(ws.cache, entry, name)).read() == f"t={MASK}\n", name
    assert "HubPassw0rd99" not in open(os.path.join(out["path"], "summary.txt")).read()
    assert ws.mlrun("cache", "verify").returncode == 0   # masked before it was sealed
    bundle = os.path.join(ws.root, "run.tar.gz")
    assert ws.mlrun("export", out["run"], "-o", bundle, "--with-cache").returncode == 0
    with tarfile.open(bundle) as tar:
        data = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile() and not m.name.endswith(".bin"))
    assert b"HubPassw0rd99" not in data and b"ParamTok3n42" not in data and b"tok-Secret-4242" not in data


def test_a_secret_a_failing_step_wrote_is_masked_too(ws):
    """Masking ran only after a step succeeded: a failed uncached step's folder (kept in the run, carried by
    `export`) held the token."""
    ws.recipe("fails", "tags: [fails]\ncache: false\npass_env: [MY_TOKEN]\n"
                       "run: echo \"token=$MY_TOKEN\" > leaked.txt; exit 1\n")
    r = ws.mlrun("fails", "--json", env=ws.env(MY_TOKEN="tok-Failing-4242"))
    assert r.returncode == 1
    [run_id] = [n for n in os.listdir(ws.runs) if not n.startswith(".")]
    assert open(os.path.join(ws.runs, run_id, "fails", "leaked.txt")).read() == f"token={MASK}\n"


def test_a_replayed_url_secret_takes_the_url_from_the_host_when_it_is_the_same_url():
    from engine.errors import ResolutionError
    from engine.index import MemoryIndex
    from engine.resolver import resolve
    index = MemoryIndex({"r": {"tags": ["r"], "run": "true"}})
    given = resolve(index, "r", env_overrides={"PIP_EXTRA": "https://bob:GivenPassword_1@pypi.example.com/simple"})
    recorded = given.request["env_overrides"]
    assert recorded == {"PIP_EXTRA": f"https://bob:{MASK}@pypi.example.com/simple"}
    host = "https://bob:HostPassword_2@pypi.example.com/simple"
    again = resolve(index, "r", env_overrides=recorded, host_env={"PIP_EXTRA": host})
    assert again.root.key == given.root.key and again.root.secret_env == {"PIP_EXTRA": host}
    for other in ({}, {"PIP_EXTRA": "https://bob:HostPassword_2@other.example.com/simple"}):
        with pytest.raises(ResolutionError, match="--env.PIP_EXTRA held a URL with a password or token, which the "
                                                  "record does not keep; set PIP_EXTRA here"):
            resolve(index, "r", env_overrides=recorded, host_env=other)


def test_url_masking_keeps_what_is_no_secret():
    from engine import secrets
    assert secrets.mask_urls("https://h/x?X-Amz-Signature=abc&X-Amz-Date=1&sig=zz&q=key") == \
        (f"https://h/x?X-Amz-Signature={MASK}&X-Amz-Date=1&sig={MASK}&q=key", ["abc", "zz"])
    for plain in ("https://host:8080/a@b", "git@github.com:o/r.git", "https://pypi.org/simple", "no url ?token=x",
                  "ssh://git@github.com/o/r.git", "http://proxyuser@proxy:3128",   # user names, not tokens
                  "https://h/d?keyword=large&max_tokens=5&sort_key=a&signature_version=4"):   # not secrets' names
        assert secrets.mask_urls(plain) == (plain, []), plain
    # A password may hold # and ?; a token as user info; a value ends before a quote or a comma (a JSON line)
    assert secrets.mask_urls("https://u:pa#ss?1@h/x https://ghp_abc123@github.com/o") == \
        (f"https://u:{MASK}@h/x https://{MASK}@github.com/o", ["pa#ss?1", "ghp_abc123"])
    # a shorter token: letters and digits mixed, 12 or more (a user's trial kept this one in run.json)
    assert secrets.mask_urls("https://tok987654321xyz@host.example/p") == (f"https://{MASK}@host.example/p",
                                                                          ["tok987654321xyz"])
    assert secrets.mask_urls('{"a": "https://h/x?sig=abc", "b": 1}') == (f'{{"a": "https://h/x?sig={MASK}", "b": 1}}', ["abc"])


def test_an_env_override_of_a_hash_env_variable_wins_over_the_hosts_url_secret(ws):
    """The host's HF_ENDPOINT with a password replaced an --env.HF_ENDPOINT given for one run (the step got the
    host's, the key hashed the override's)."""
    ws.recipe("e", """
        tags: [e]
        hash_env: [MY_URL]
        run: printf %s "$MY_URL" > out.txt
    """)
    r = ws.mlrun("e", "--json", "--env.MY_URL=https://plain.example.org/y",
                 env=ws.env(MY_URL="https://user:HostPassword_77@mirror.example.org/x"))
    assert r.returncode == 0, r.stderr
    with open(os.path.join(json.loads(r.stdout)["path"], "out.txt")) as f:
        assert f.read() == "https://plain.example.org/y"


def test_masking_never_writes_through_a_hard_link_out_of_the_step(ws, tmp_path):
    """A step that hard-linked a user's file (or a dep's entry file) into its folder: masking rewrote the shared
    inode, and the user's own read-only file outside the cache lost its text."""
    mine = tmp_path / "mynotes.txt"
    mine.write_text("my token is abcdefgh12345678\n")
    mine.chmod(0o444)
    ws.recipe("linker", f"tags: [linker]\npass_env: [MY_TOKEN]\nrun: ln {mine} notes.txt\n")
    r = ws.mlrun("linker", "--json", env=ws.env(MY_TOKEN="abcdefgh12345678"))
    assert r.returncode == 0, r.stderr
    assert mine.read_text() == "my token is abcdefgh12345678\n" and oct(mine.stat().st_mode & 0o777) == "0o444"
    [entry] = ws.entries("linker")
    kept = os.path.join(ws.cache, entry, "notes.txt")
    assert open(kept).read() == f"my token is {MASK}\n" and os.stat(kept).st_nlink == 1
    assert not [n for n in os.listdir(os.path.join(ws.cache, entry)) if n.startswith(".mlrun-mask")]
    assert ws.mlrun("cache", "verify").returncode == 0


def test_a_place_or_a_tokenizer_named_variable_is_no_secret(ws):
    """A dep's export MLRUN_TOKENIZER_DIR (a cache path: TOKEN in its name) was masked in the config a step wrote,
    and the entry named '<redacted>' for its tokenizer; HF_TOKEN_PATH names a file, not the token."""
    from engine import secrets
    assert not secrets.is_secret("MLRUN_TOKENIZER_DIR") and not secrets.is_secret("HF_TOKEN_PATH")
    assert not secrets.is_secret("DB_PASSWORD_FILE") and not secrets.is_secret("TOKENIZER")
    assert secrets.is_secret("HF_TOKEN") and secrets.is_secret("MY_API_KEY") and secrets.is_secret("TOKENS")
    for name in ("MAX_TOKENS", "max_new_tokens", "NUM_TOKENS", "MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS", "KEYBOARD",
                 "AUTH_MODE", "MONKEY", "HOTKEY", "KEYCLOAK_URL", "SSH_AUTH_SOCK"):   # masked: out of the key
        assert not secrets.is_secret(name), name
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "GITHUB_TOKEN", "SORT_KEY", "AUTH", "GIT_PAT",
                 "AUTH_TOKEN", "PGPASSWORD", "OPT_PASS", "NEW_TOKEN", "GH_NEW_TOKEN", "X_MAX_TOKEN", "OPENAI_API_KEY",
                 "APIKEY", "MY_APIKEY", "SSH_KEY", "SSH_KEYS", "NPM_TOKEN", "HF_TOKEN", "PRIVATEKEY", "SECRETKEY"):
        assert secrets.is_secret(name), name
    ws.recipe("get-tok", "tags: [get, tok]\nrun: mkdir -p tok && echo hello > tok/vocab.txt\n"
                         "exports: {MLRUN_TOKENIZER_DIR: \"{entry}/tok\"}\n")
    ws.recipe("use-tok", "tags: [use, tok]\ndeps: [{name: tok, query: get tok}]\n"
                         "run: |\n  printf '{\"tokenizer\": \"%s\"}' \"$MLRUN_TOKENIZER_DIR\" > config.json\n")
    r = ws.mlrun("use tok", "--json")
    assert r.returncode == 0, r.stderr
    assert "masked there" not in r.stderr
    [entry] = ws.entries("use-tok")
    [dep] = ws.entries("get-tok")
    config = json.load(open(os.path.join(ws.cache, entry, "config.json")))
    assert config == {"tokenizer": os.path.join(ws.cache, dep, "tok")}


def test_a_variable_the_run_gave_by_env_is_no_host_difference():
    """The replay asked for HF_ENDPOINT in its shell (the run had it by --env), then listed it as a host
    difference: 'host.env.HF_ENDPOINT: recorded absent, here "http://user:<redacted>@..."'."""
    from engine import compare
    recorded = {"host": {"env": {}}, "request": {"env_overrides": {"HF_ENDPOINT": f"http://user:{MASK}@h/"}}}
    replayed = {"host": {"env": {"HF_ENDPOINT": f"http://user:{MASK}@h/", "CXX": "g++"}},
                "request": {"env_overrides": {"HF_ENDPOINT": f"http://user:{MASK}@h/"}}}
    assert compare.host(recorded, replayed) == [("host.env.CXX", None, "g++")]


@pytest.mark.skipif(os.geteuid() != 0 or not __import__("shutil").which("setpriv"),
                    reason="drops root's file-permission override with setpriv")
def test_a_secret_in_a_read_only_folder_of_the_step_is_masked_too(ws):
    """`cp -r` out of a sealed entry keeps its folders read-only: masking by a new file renamed into place failed
    there (Permission denied) and the secret was published in the cache, unsaid."""
    import subprocess
    from conftest import MLRUN
    ws.recipe("rodir", "tags: [rodir]\npass_env: [MY_TOKEN]\n"
                       "run: mkdir d && echo \"token=$MY_TOKEN\" > d/x.txt && chmod 555 d\n")
    # as a user whose folder modes hold (root's DAC override dropped)
    r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", MLRUN, "rodir"],
                       env=ws.env(MY_TOKEN="abcdefgh12345678"), cwd=ws.root, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "masked there" in r.stderr, r.stderr
    [entry] = ws.entries("rodir")
    assert open(os.path.join(ws.cache, entry, "d", "x.txt")).read() == f"token={MASK}\n"


def test_a_record_that_masked_a_name_no_longer_secret_replays_from_the_host():
    """HF_TOKEN_PATH counted as a secret when the run was made (<redacted> in its record): its replay said it "held
    a URL with a password or token"."""
    from engine.index import MemoryIndex
    from engine.resolver import resolve
    index = MemoryIndex({"r": {"tags": ["r"], "run": "true"}})
    again = resolve(index, "r", env_overrides={"HF_TOKEN_PATH": MASK}, host_env={"HF_TOKEN_PATH": "/home/me/tok"})
    assert again.root.secret_env == {"HF_TOKEN_PATH": "/home/me/tok"}
    from engine.errors import ResolutionError
    with pytest.raises(ResolutionError, match="--env.HF_TOKEN_PATH was given a secret, which the record does not "
                                              "keep; set HF_TOKEN_PATH here"):
        resolve(index, "r", env_overrides={"HF_TOKEN_PATH": MASK}, host_env={})
