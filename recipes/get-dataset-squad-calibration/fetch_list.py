"""Get the MLPerf BERT calibration list into the step's folder, check it, and record where it came from."""
import hashlib
import json
import os
import sys
import urllib.request

NAME = "bert_calibration_features.txt"
FEATURES = 10833  # SQuAD v1.1 dev features at max_seq_len 384, doc_stride 128
COUNT = 100


def main():
    url, wanted = os.environ["MLRUN_INPUT_URL"], os.environ.get("MLRUN_INPUT_SHA256", "").lower()
    mirror = os.environ.get("MLRUN_MIRROR")
    local = [os.path.join(mirror, where, NAME) for where in ("", "calibration/SQuAD-v1.1")] if mirror else []
    source = next((path for path in local if os.path.isfile(path)), None)
    if source:
        data = open(source, "rb").read()
    else:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except OSError as error:
            where = f"MIRROR/{NAME} or MIRROR/calibration/SQuAD-v1.1/{NAME}"
            sys.exit(f"error: cannot download {url}: {error}" + (f" (and no {NAME} in the mirror {mirror}: put it at "
                                                                  f"{where})" if mirror else
                                                                  f"; offline, put it at {where} and give --mirror"))
    digest = hashlib.sha256(data).hexdigest()
    if wanted and digest != wanted:
        sys.exit(f"error: {source or url} has sha256 {digest}, not the {wanted} asked")
    words = data.decode(errors="replace").split()
    if not all(word.isdigit() for word in words):
        sys.exit(f"error: {source or url} is not a list of feature indices (one integer a line)")
    indices = [int(word) for word in words]
    if len(indices) != COUNT or len(set(indices)) != COUNT or max(indices) >= FEATURES:
        largest = f", largest {max(indices)}" if indices else ""
        sys.exit(f"error: {source or url} holds {len(indices)} indices ({len(set(indices))} distinct{largest}), "
                 f"not {COUNT} distinct ones below {FEATURES}")
    open(NAME, "wb").write(data)
    record = {"source": source or url, "sha256": digest, "verified": bool(wanted)}
    open("source.json", "w").write(json.dumps(record, indent=1) + "\n")
    print(f"{NAME}: {COUNT} indices from {record['source']}, sha256 {digest} "
          f"({'verified' if wanted else 'UNVERIFIED: no checksum known'})")


if __name__ == "__main__":
    main()
