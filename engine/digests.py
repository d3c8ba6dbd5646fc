"""File and tree digests, streamed so multi-GB models never sit in memory."""
import hashlib
import os


def hash_into(path, hashers):
    """Feed a file's bytes to each hasher, reading it once."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashers:
                h.update(chunk)


def file_digests(path, algos=("sha256", "md5")):
    """{algo: hex digest} of a file, reading it once whatever the number of algos."""
    hashers = {algo: hashlib.new(algo) for algo in algos}
    hash_into(path, hashers.values())
    return {algo: h.hexdigest() for algo, h in hashers.items()}


def file_digest(path, algo="sha256"):
    return file_digests(path, (algo,))[algo]


def tree_digests(root, skip=()):
    """{relative path: digest} for every file under root; links are recorded by their target."""
    out = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        dirs[:] = sorted(d for d in dirs if os.path.normpath(os.path.join(rel_folder, d)) not in skip)
        for d in dirs:
            path = os.path.join(folder, d)
            if os.path.islink(path):
                out[os.path.relpath(path, root)] = "link:" + os.readlink(path)
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel in skip:
                continue
            out[rel] = "link:" + os.readlink(path) if os.path.islink(path) else file_digest(path)
    return out


def summary(digests):
    """One digest for a whole {path: digest} map."""
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest()
