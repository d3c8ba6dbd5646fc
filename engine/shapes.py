"""Checks of the JSON files mlrun reads back (run and sweep records, entry.json, a submission's state): a file
edited by hand or damaged holds a value of another type where the readers take one as it comes, and said
"unexpected TypeError ... a bug in mlrun". Each reader says what is wrong instead, or reads past the file; the
indexes mlrun keeps are sealed with the sha256 of what they hold."""
import hashlib
import json


def mistyped(obj, shape, times=()):
    """The first (field, value) of the dict obj whose value is none of its shape's types, else None. A missing
    field or null passes; true and false pass only where bool is named; fields in times hold epoch seconds."""
    for field, kinds in shape.items():
        value = obj.get(field)
        if value is None:
            continue
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds
                or field in times and not 0 <= value < 1e11):   # NaN, Infinity, 1e20: no time
            return field, value
    return None


def said(field, value):
    """'FIELD is TYPE VALUE', the words of a mistyped field."""
    return f"{field} is {type(value).__name__} {json.dumps(value, default=str)[:40]}"


def seal(head, value, **dumps):
    """The bytes of an index mlrun keeps (the recipes it read, the rows `runs` lists): a first line, head with the
    sha256 of the JSON that follows, then that JSON. A copy edited or damaged is told by unseal."""
    body = json.dumps(value, **dumps).encode()
    return json.dumps({**head, "sha256": hashlib.sha256(body).hexdigest()}).encode() + b"\n" + body


def unseal(f):
    """(head, value) of a file seal wrote, read from f (binary); value None where the body is not as sealed.
    Raises ValueError (or TypeError) for a file of another form."""
    head, body = json.loads(f.readline()), f.read()
    if not isinstance(head, dict):
        raise ValueError("no head line")
    return head, json.loads(body) if head.get("sha256") == hashlib.sha256(body).hexdigest() else None
