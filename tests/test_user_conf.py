"""A user's user.conf is read as LoadGen reads it: each line LoadGen would drop unsaid or reject is refused,
and the values recorded are the ones LoadGen uses. Every case is checked against the real LoadGen too."""
import mlperf_loadgen as lg
import pytest

from engine.errors import UsageError
from mlperf_bert import user_conf

SETTINGS = [name for name in dir(lg.TestSettings) if not name.startswith("_") and name != "FromConfig"]


@pytest.fixture(scope="module", autouse=True)
def loadgen_read_once(tmp_path_factory):
    """A process's first FromConfig also applies LoadGen's own mlperf.conf: done once here, so that the cases see
    only what their line does, whatever order they run in."""
    empty = tmp_path_factory.mktemp("conf") / "empty.conf"
    empty.write_text("")
    lg.TestSettings().FromConfig(str(empty), "bert", "Server")


def loadgen_reads(tmp_path, text, scenario):
    """(LoadGen's return code, the settings it changed) for a user.conf holding text."""
    path = tmp_path / "user.conf"
    path.write_text(text)
    settings, default = lg.TestSettings(), lg.TestSettings()
    rc = settings.FromConfig(str(path), "bert", scenario)
    return rc, {name: getattr(settings, name) for name in SETTINGS
                if str(getattr(settings, name)) != str(getattr(default, name))}


# (line, scenario, LoadGen reads it, mlrun's refusal says)
CASES = [
    ("bert.Offline.target_qps = 10", "Offline", True, None),
    ("  *.Offline.target_qps   =  10  ", "Offline", True, None),
    ("bert.Offline.min_duration = 0x10", "Offline", True, None),
    ("bert.Server.max_async_queries = 3", "Server", True, None),
    ("bert.*.target_latency = 5", "Server", True, None),
    ("bert.Offline.target_qps=10", "Offline", False, "spaces around the '='"),
    ("bert.Offline.target_qsp = 10", "Offline", False, "did you mean 'target_qps'"),
    ("bert.offline.target_qps = 10", "Offline", False, "did you mean 'Offline'"),
    ("bert-99.Offline.target_qps = 10", "Offline", False, "model 'bert-99'"),
    ("bert.Offline.target_latency = 10", "Offline", False, "for Offline it is ignored"),
    ("bert.SingleStream.target_qps = 10", "SingleStream", False, "for SingleStream it is ignored"),
    ("bert.Server.qsl_rng_seed = 3", "Server", False, "mlperf.conf only"),
    ("bert.Server.target_duration = 5000", "Server", False, "mlperf.conf only"),   # a line of mlperf.conf's
    ("bert.Offline.target_qps = ten", "Offline", False, "not a number"),
    ("#note here", "Offline", False, "lone '#'"),
    ("bert.Offline.target_qps =", "Offline", False, "no value after '='"),
    ("bert.Offline.min_query_count = 1_000", "Offline", False, "not a number"),   # LoadGen rejects, no line named
    ("bert.Offline.target_qps = 10 # mine", "Offline", False, "nothing after it"),
    # LoadGen splits at ASCII spaces only: the line was dropped unsaid, and the record said 123
    ("bert.Offline.target_qps\u00a0=\u00a0123", "Offline", False, "U+00A0, an invisible character LoadGen reads"),
    ("\ufeffbert.Offline.target_qps = 123", "Offline", False, "U+FEFF, an invisible character"),   # a BOM
    ("bert.Offline.target_qps = 0b101", "Offline", False, "not a number"),   # Python's int(t, 0) took them
    ("bert.Offline.min_query_count = 0o17", "Offline", False, "not a number"),
    ("bert.Offline.target_qps = 0x1p4", "Offline", True, None),   # strtod's hex float: 16
]


@pytest.mark.parametrize("line,scenario,read,said", CASES)
def test_a_line_is_refused_exactly_when_loadgen_would_not_read_it(tmp_path, line, scenario, read, said):
    rc, changed = loadgen_reads(tmp_path, line + "\n", scenario)
    assert (rc == 0 and bool(changed)) == read, (rc, changed)   # the table says what LoadGen does
    found = user_conf.problems(line + "\n# a comment\n\n")
    if read:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith("line 1 (") and said in found[0]


def test_lines_loadgen_reads_otherwise_than_they_look_are_refused_too(tmp_path):
    rc, changed = loadgen_reads(tmp_path, "bert.Server.mode = 1\n", "Server")
    assert rc == 0 and "mode" in changed   # LoadGen reads it; the harness then sets the mode it was given
    assert "give --mode" in user_conf.problems("bert.Server.mode = 1")[0]
    rc, changed = loadgen_reads(tmp_path, "bert.Offline.target_qps = 10 20\n", "Offline")
    assert rc == 0 and changed == {"offline_expected_qps": 20}   # the last word, unsaid
    assert "one value" in user_conf.problems("bert.Offline.target_qps = 10 20")[0]


def test_the_values_recorded_are_the_ones_loadgen_uses(tmp_path):
    """A scenario's wildcard line beats the model's wildcard line (the record said 5 where LoadGen ran 3)."""
    text = "bert.*.target_qps = 5\n*.Offline.target_qps = 3\n*.*.min_duration = 7\nbert.*.min_duration = 9\n" \
           "bert.Offline.min_query_count = 0x10\n"
    rc, changed = loadgen_reads(tmp_path, text, "Offline")
    assert rc == 0 and changed["offline_expected_qps"] == 3 and changed["min_duration_ms"] == 9
    assert user_conf.values_set(text.splitlines(), "Offline") == {"target_qps": 3, "min_duration": 9,
                                                                  "min_query_count": 16}


def test_numbers_are_read_by_the_function_loadgen_reads_their_key_with(tmp_path):
    """strtod for target_qps (010 is 10: the record said 8), strtoull base 0 for whole-number keys (010 is 8)."""
    text = "bert.Offline.target_qps = 010\nbert.Offline.min_duration = 0x1p4\nbert.Offline.max_duration = 0x10\n"
    rc, changed = loadgen_reads(tmp_path, text, "Offline")
    assert rc == 0 and changed["offline_expected_qps"] == 10 and changed["max_duration_ms"] == 16
    assert user_conf.values_set(text.splitlines(), "Offline") == {"target_qps": 10, "min_duration": 1,
                                                                  "max_duration": 16}
    rc, changed = loadgen_reads(tmp_path, "bert.Offline.target_qps = 0x1p4\n", "Offline")
    assert changed["offline_expected_qps"] == user_conf.values_set(["bert.Offline.target_qps = 0x1p4"],
                                                                   "Offline")["target_qps"] == 16
    rc, changed = loadgen_reads(tmp_path, "bert.Offline.min_query_count = 010\n", "Offline")
    assert changed["min_query_count"] == 8
    assert "as an octal number: min_query_count would be 8" in \
        user_conf.problems("bert.Offline.min_query_count = 010")[0]


def test_check_names_the_file_and_every_line(tmp_path):
    path = tmp_path / "mine.conf"
    path.write_text("bert.Offline.target_qsp = 10\nbert.Offline.min_duration = 100\nbert.Server.target_qps=3\n")
    with pytest.raises(UsageError) as caught:
        user_conf.check(path)
    message = str(caught.value)
    assert str(path) in message and "line 1 " in message and "line 3 " in message and "line 2 " not in message
    path.write_bytes(b"bert.Offline.target_qps = 1\xff\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        user_conf.check(path)
    path.write_text("# mine\nbert.Offline.target_qps = 10\n")
    user_conf.check(path)


def test_a_whole_number_key_given_otherwise_is_refused_with_what_loadgen_would_read(tmp_path):
    """`min_query_count = 5e1`: LoadGen ran 5, the record said 50.0."""
    rc, changed = loadgen_reads(tmp_path, "bert.Offline.min_query_count = 5e1\n", "Offline")
    assert rc == 0 and changed["min_query_count"] == 5
    assert "as a whole number: 5e1 would be 5" in user_conf.problems("bert.Offline.min_query_count = 5e1")[0]
    rc, changed = loadgen_reads(tmp_path, "bert.Server.target_latency = 10.5\n", "Server")
    assert changed["server_target_latency_ns"] == 10_000_000   # whole ms
    assert "10.5 would be 10" in user_conf.problems("bert.Server.target_latency = 10.5")[0]
    assert user_conf.problems("bert.SingleStream.target_latency = 10.5\nbert.Offline.target_qps = 5e1") == []
    rc, changed = loadgen_reads(tmp_path, "bert.Offline.min_query_count = -5\n", "Offline")
    assert changed["min_query_count"] == 2 ** 64 - 5   # and later "LoadGen would generate 18,446,... samples"
    assert "-5 would be 18446744073709551611" in user_conf.problems("bert.Offline.min_query_count = -5")[0]


def test_an_option_and_the_user_conf_setting_one_key_conflict():
    """--target_qps=100 beside a user.conf's 50: LoadGen ran 50 and `runs` showed 100; --find_peak beside a
    user.conf target_qps ran every trial at the file's rate and never ended."""
    from types import SimpleNamespace
    lines = ["bert.Offline.target_qps = 50", "*.Server.target_qps = 30", "bert.*.min_duration = 1000"]
    args = SimpleNamespace(target_qps=100, target_latency=None, min_duration=None, find_peak=False)
    assert user_conf.conflicts(lines, "Offline", args) == ["--target_qps and the user.conf's target_qps = 50"]
    args = SimpleNamespace(target_qps=None, target_latency=None, min_duration=500, find_peak=True)
    assert user_conf.conflicts(lines, "Server", args) == [
        "--min_duration and the user.conf's min_duration = 1000",
        "--find_peak searches target_qps, which the user.conf sets (30)"]
    assert user_conf.conflicts(lines, "SingleStream", SimpleNamespace(target_latency=5, min_duration=None)) == []


def test_a_count_the_user_conf_raised_says_so():
    """'32 samples completed (--count 20: LoadGen added queries to fill --min-duration)' with no min_duration."""
    from mlperf_bert import harness
    note = harness.count_note({"count": 20, "samples_completed": 32, "scenario": "Offline",
                               "user_settings": {"min_query_count": 32}})
    assert note == " (--count 20: your user.conf's min_query_count 32)"



@pytest.mark.parametrize("value", ["-010", "-0x10", "99999999999999999999999", "-99999999999999999999999"])
def test_a_whole_number_out_of_its_range_is_refused_with_what_loadgen_reads(tmp_path, value):
    """-010 was said to be ...606 (LoadGen: ...608), -0x10 to be 0, a number past 2**64 recorded as given."""
    rc, changed = loadgen_reads(tmp_path, f"bert.Offline.min_query_count = {value}\n", "Offline")
    assert rc == 0
    [problem] = user_conf.problems(f"bert.Offline.min_query_count = {value}")
    assert problem.endswith(f"{value} would be {changed['min_query_count']}"), problem
    assert user_conf.values_set([f"bert.Offline.min_query_count = {value}"], "Offline") == \
        {"min_query_count": changed["min_query_count"]}


@pytest.mark.parametrize("line", ["bert.Offline.target_qps = nan", "bert.Server.target_qps = inf",
                                  "bert.Offline.target_qps = 0", "bert.Offline.target_qps = -5",
                                  "bert.SingleStream.target_latency = 0", "bert.Server.target_latency = -1"])
def test_a_target_loadgen_takes_but_no_run_can_meet_is_refused(tmp_path, line):
    """LoadGen read nan, inf, 0 and -5: the harness ended in a traceback (cannot convert float NaN to integer), or
    ran and said VALID."""
    rc, _ = loadgen_reads(tmp_path, line + "\n", line.split(".")[1])
    assert rc == 0
    [problem] = user_conf.problems(line)
    assert "give a positive number" in problem or "number of no sign" in problem, problem


@pytest.mark.parametrize("line", ["bert.Server.target_latency = 9223372036854775808",
                                  "bert.SingleStream.target_latency = 1e308"])
def test_a_target_past_loadgens_range_is_not_called_negative(line):
    [problem] = user_conf.problems(line)
    assert "past what LoadGen holds" in problem and "positive" not in problem, problem
