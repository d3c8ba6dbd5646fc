"""Checks of the JSON files mlrun reads back (run and sweep records, entry.json, a submission's state): a file
edited by hand or damaged holds a value of another type where the readers take one as it comes, and said
"unexpected TypeError ... a bug in mlrun". Each reader says what is wrong instead, or reads past the file."""
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
