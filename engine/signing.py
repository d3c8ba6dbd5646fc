"""SSH signatures, made and checked by ssh-keygen (OpenSSH): mlrun has no crypto code of its own.

`ssh-keygen -Y sign` signs a message under NAMESPACE with a key a team already has; who may sign is an
allowed_signers file, the format git uses (`PRINCIPALS KEYTYPE BASE64-KEY`, one key a line). The key's
path and passphrase are only ever given to ssh-keygen: nothing here writes them anywhere.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from .errors import MlrunError, UsageError

NAMESPACE = "mlrun-bundle"
TIMEOUT = 60   # seconds; a check never waits for anyone


def available():
    return shutil.which("ssh-keygen") is not None


def require(key=None, allowed_signers=None):
    """Fail now, before any long work, when ssh-keygen or the given key or allowed_signers file is missing."""
    _ssh_keygen()
    if key and not os.path.isfile(key):
        raise UsageError(f"--sign {key}: " + ("a folder, not a key file" if os.path.isdir(key) else "no such key file"),
                         hint="give an SSH private key, e.g. ~/.ssh/id_ed25519")
    if allowed_signers and not os.path.isfile(allowed_signers):
        raise UsageError(f"--trust {allowed_signers}: "
                         + ("a folder, not a file" if os.path.isdir(allowed_signers) else "no such file"),
                         hint="give an allowed_signers file (the format git uses: PRINCIPAL KEYTYPE KEY a line)")


def sign(message, key):
    """The armored SSH signature (bytes) of message made with key: a private key file, or a public one
    whose private half ssh-agent holds."""
    require(key=key)
    interactive = sys.stdin.isatty()
    with tempfile.TemporaryDirectory(prefix="mlrun-sign-") as tmp:
        path = os.path.join(tmp, "message")
        with open(path, "wb") as f:
            f.write(message)
        # At a terminal ssh-keygen may ask for the key's passphrase there; otherwise it gets no terminal
        # (its own session) and no stdin, so it fails at once instead of waiting for an answer.
        result = _keygen(["-Y", "sign", "-n", NAMESPACE, "-f", key, path], timeout=None if interactive else TIMEOUT,
                         stdin=None if interactive else subprocess.DEVNULL, start_new_session=not interactive)
        if result.returncode == 0:
            with open(path + ".sig", "rb") as f:
                return f.read()
    said = _last_line(result.stderr)
    if "passphrase" in said and not interactive:
        raise MlrunError(f"cannot sign with {key}: it is protected by a passphrase and mlrun runs without a "
                         "terminal to ask for it",
                         hint=f"load the key into ssh-agent (ssh-add {key.removesuffix('.pub')}) and sign with its "
                              f"public half: --sign {key if key.endswith('.pub') else key + '.pub'}")
    if "Couldn't load" in said:   # "Couldn't load public key README.md: No such file or directory", of a file there
        raise MlrunError(f"--sign {key}: not an SSH key ssh-keygen can read (it said: {said})",
                         hint="--sign takes an SSH private key (e.g. ~/.ssh/id_ed25519), or a public key whose private "
                              "half ssh-agent holds")
    raise MlrunError(f"ssh-keygen could not sign with {key}: {said}",
                     hint="--sign takes an SSH private key, or a public key whose private half ssh-agent holds")


def signer(message, signature):
    """'ED25519 key SHA256:...' when signature is a valid signature of message, else None. Says nothing of trust."""
    result = _check(["-Y", "check-novalidate", "-n", NAMESPACE], message, signature)
    found = re.search(r"signature with (.+ key \S+)", result.stdout + result.stderr)
    return found[1] if result.returncode == 0 and found else None


def principal(message, signature, allowed_signers):
    """The principal allowed_signers names for the valid signature of message, or None when it names none."""
    require(allowed_signers=allowed_signers)
    found = _check(["-Y", "find-principals", "-f", allowed_signers], b"", signature)
    names = found.stdout.split()
    if found.returncode != 0 or not names:
        return None
    verified = _check(["-Y", "verify", "-n", NAMESPACE, "-f", allowed_signers, "-I", names[0]], message, signature)
    return names[0] if verified.returncode == 0 else None


def allowed_signers_problem(path):
    """Why an allowed_signers file may list no one that ssh-keygen finds, as its lines show it, or None: empty,
    a bare public key (no principal before it: a .pub file given as it is), a line of another form, a key limited
    to namespaces other than mlrun's (git's namespaces="git")."""
    try:
        with open(path, errors="replace") as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip() and not line.startswith("#")]
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if not lines:
        return "it lists no one (it is empty)"
    for n, line in lines:
        fields = line.split()
        if re.match(r"(ssh-|ecdsa-|sk-)", fields[0]):
            return (f"its line {n} is a public key without the principal before it (a .pub file as it is): write "
                    f"'NAME@EXAMPLE.COM {fields[0]} ...'")
        if len(fields) < 3 or not any(re.match(r"(ssh-|ecdsa-|sk-)", f) for f in fields[1:]):
            return f"its line {n} is not 'PRINCIPALS [OPTIONS] KEYTYPE KEY'"
        spaces = re.search(r'namespaces="([^"]*)"', line)
        if spaces and NAMESPACE not in spaces[1].split(","):
            return (f'its line {n} allows its key only for namespaces="{spaces[1]}": add {NAMESPACE} (the namespace '
                    "mlrun signs bundles in) or leave the option out")
    return None


def _check(args, message, signature):
    with tempfile.TemporaryDirectory(prefix="mlrun-verify-") as tmp:
        path = os.path.join(tmp, "signature")
        with open(path, "wb") as f:
            f.write(signature)
        return _keygen(args + ["-s", path], input=message, timeout=TIMEOUT, start_new_session=True)


def _ssh_keygen():
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise MlrunError("signatures are made and checked by ssh-keygen (OpenSSH), which is not on PATH",
                         hint="install OpenSSH's client: apt-get install openssh-client (Debian, Ubuntu), "
                              "dnf install openssh-clients (Fedora, RHEL)")
    return exe


def _keygen(args, timeout, **kwargs):
    try:
        result = subprocess.run([_ssh_keygen(), *args], capture_output=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise MlrunError(f"ssh-keygen {args[1]} gave no answer within {timeout} s") from None
    result.stdout, result.stderr = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    return result


def _last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no reason given"
