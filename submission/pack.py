"""Pack a submission tree as the official pack_submission.sh does (`tar -czf - closed/ open/`), unencrypted.

The archive holds the division folders at its top (closed/, open/, network/: those the tree has), files
in sorted order, owned by uid/gid 0 with no user names (a user's login does not travel with the results).
A `<archive>.sha1` beside it holds the hash line the results chair asks for (sha1sum's format). The
encryption pack_submission.sh adds is optional under the rules: `openssl enc -e -aes256` on this archive
encrypts it as its --pack does.
"""
import hashlib
import os
import tarfile

from engine.errors import UsageError

DIVISIONS = ("closed", "open", "network")


def pack(tree_dir, out_path):
    """Write out_path (.tar.gz) and out_path.sha1 from tree_dir's division folders; returns out_path."""
    tree_dir, out_path = os.path.abspath(tree_dir), os.path.abspath(out_path)
    divisions = [d for d in DIVISIONS if os.path.isdir(os.path.join(tree_dir, d))]
    if not divisions:
        raise UsageError(f"{tree_dir} holds no division folder ({', '.join(DIVISIONS)})",
                         hint="give the submission tree's top folder")
    if out_path.startswith(tree_dir + os.sep):
        raise UsageError(f"{out_path} is inside the tree it packs", hint="write the archive beside the tree")
    members = []
    for division in divisions:
        for folder, dirs, files in os.walk(os.path.join(tree_dir, division)):
            dirs.sort()
            members.append(folder)
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    _check_link(tree_dir, path)
                members.append(path)
    tmp = out_path + ".tmp"
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in members:
                tar.add(path, arcname=os.path.relpath(path, tree_dir), recursive=False, filter=_anonymous)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    digest = hashlib.sha1()
    with open(out_path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    with open(out_path + ".sha1", "w") as f:
        f.write(f"{digest.hexdigest()}  {os.path.basename(out_path)}\n")
    return out_path


def _check_link(tree_dir, path):
    """A link must stay inside the tree: anything else would not unpack as the checker saw it."""
    target = os.readlink(path)
    real = os.path.realpath(path)
    if os.path.isabs(target) or not (real == tree_dir or real.startswith(tree_dir + os.sep)):
        raise UsageError(f"{path} links to {target}, outside the tree", hint="copy the file into the tree")


def _anonymous(info):
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
