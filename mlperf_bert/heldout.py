"""Running and scoring on a subset of the dev set's questions: a model's held-out half.

A model trained on part of the dev set (get ml-model bert _minilm-squad) must never be scored on
the questions it saw. Its entry holds heldout.json ({"question_ids": [...], "note": "..."}), which the
app gets through the model's exports (MLRUN_MODEL_HELDOUT); the harness then runs only the features
of those questions (their qsl indices count from 0 in that order) and the accuracy step scores only
them, printing the note beside the figure: it is not the official full-dev-set metric.
"""
import json
from pathlib import Path

import numpy as np

from engine.errors import UsageError


def read(path):
    """(question ids in a set, the note to print beside the figure) of a heldout.json or a JSON list of ids."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the question list {path}: {error}")
    ids = data.get("question_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise UsageError(f"{path}: expected a JSON list of question ids, or an object with \"question_ids\"")
    note = data.get("note") if isinstance(data, dict) else None
    return set(ids), note or f"{len(ids)} chosen questions of the dev set ({path}): NOT the official full-dev-set metric"


class QuestionSubset:
    """A features folder (squad_features.FeatureSet) seen through only the features of some questions."""

    def __init__(self, feature_set, question_ids, note):
        self.note = note
        self.folder = feature_set.folder
        keep = [i for i, example in enumerate(feature_set.examples) if example["qas_id"] in question_ids]
        missing = len(question_ids) - len(keep)
        if missing:
            raise UsageError(f"{missing} of the {len(question_ids)} questions to score are not in {feature_set.folder}",
                             hint="the question list belongs to another dataset")
        new_index = {old: new for new, old in enumerate(keep)}
        self.examples = [feature_set.examples[i] for i in keep]
        rows = [i for i, feature in enumerate(feature_set.features) if feature["example_index"] in new_index]
        self.features = [{**feature_set.features[i], "example_index": new_index[feature_set.features[i]["example_index"]]}
                         for i in rows]
        for name in ("input_ids", "input_mask", "segment_ids", "lengths"):
            setattr(self, name, np.asarray(getattr(feature_set, name))[rows])


def restrict(feature_set, questions_path):
    """The feature set limited to the questions of questions_path (None: unchanged)."""
    if not questions_path:
        return feature_set
    ids, note = read(questions_path)
    return QuestionSubset(feature_set, ids, note)
