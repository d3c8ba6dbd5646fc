"""The QA app's input handling, fast: a tiny random model (its answers mean nothing; what is read, refused,
skipped and kept is the point)."""
import io
import json
import sys
from pathlib import Path

import onnx
import pytest

from conftest import SHARED_DATA
from mlperf_bert import qa, random_model

VOCAB = str(Path(SHARED_DATA) / "bert-vocab" / "vocab.txt")
PASSAGE = "Paris is the capital of France. Berlin is the capital of Germany."


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "model.onnx"
    onnx.save(random_model.build(layers=2, hidden=64, heads=2, seq="dynamic"), str(path))
    return str(path)


def ask(model, tmp_path, monkeypatch, stdin, *args):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = qa.main(["--model", model, "--vocab", VOCAB, "--out", str(tmp_path), *args])
    saved = tmp_path / "qa.json"
    return code, (json.loads(saved.read_text())["qa"]["answers"] if saved.exists() else None)


def test_each_answer_is_kept_as_it_is_given(model, tmp_path, monkeypatch, capsys):
    """qa.json is written after every answer: Ctrl-C in a session lost all of them (it was written at the end)."""
    calls = []
    real = qa.save
    monkeypatch.setattr(qa, "save", lambda args, answers: (calls.append(len(answers)), real(args, answers)))
    code, answers = ask(model, tmp_path, monkeypatch, "Who?\nWhat?\n", f"--passage={PASSAGE}")
    assert code == 0 and [a["question"] for a in answers] == ["Who?", "What?"]
    assert calls[:2] == [1, 2]


def test_answers_to_piped_or_filed_questions_say_their_question(model, tmp_path, monkeypatch, capsys):
    """Off a terminal, 'answer: ...' lines alone did not say which question each answered; --question asks one."""
    ask(model, tmp_path, monkeypatch, "Who?\nWhat?\n", f"--passage={PASSAGE}")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("question:", "answer:"))]
    assert [line.split(":")[0] for line in lines] == ["question", "answer", "question", "answer"]
    assert lines[0] == "question: Who?" and lines[2] == "question: What?"
    questions = tmp_path / "questions.txt"
    questions.write_text("Who?\n")
    ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", f"--question-file={questions}")
    assert "question: Who?" in capsys.readouterr().out
    ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", "--question=Who?")
    assert "question:" not in capsys.readouterr().out


def test_bad_lines_of_a_session_are_skipped_and_said(model, tmp_path, monkeypatch, capsys):
    """A question of no words ('\\u200b') was answered; bytes that are not UTF-8 went into qa.json as surrogates."""
    code, answers = ask(model, tmp_path, monkeypatch, "\u200b\nWhat is the capital \udce9?\nWho?\n",
                        f"--passage={PASSAGE}")
    out = capsys.readouterr()
    assert code == 0 and [a["question"] for a in answers] == ["Who?"], out
    assert "skipped: the question '\\u200b' has no words the model reads" in out.out
    assert "skipped: not UTF-8 text" in out.out + out.err


def test_a_bad_line_of_a_question_file_is_skipped_as_one_of_standard_input(model, tmp_path, monkeypatch, capsys):
    """It ended the session, exit 2, the questions after it unanswered and the run an error."""
    questions = tmp_path / "questions.txt"
    questions.write_text("Who?\n\u200b\nWhat?\n")
    code, answers = ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", f"--question-file={questions}")
    assert code == 0 and [a["question"] for a in answers] == ["Who?", "What?"]
    assert "skipped: the question '\\u200b' has no words the model reads" in capsys.readouterr().out
    questions.write_bytes(b"Who?\n\xff\xfe bad\nWhat?\n")   # not UTF-8: skipped as from a pipe (it ended the session)
    code, answers = ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", f"--question-file={questions}")
    assert code == 0 and [a["question"] for a in answers] == ["Who?", "What?"]
    assert "skipped: not UTF-8 text: '\\udcff\\udcfe bad'" in capsys.readouterr().err
    questions.write_text("\u200b\n")   # none answered: said
    code, _ = ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", f"--question-file={questions}")
    assert code == 2 and f"no question of {questions} could be answered" in capsys.readouterr().err


def test_a_random_model_s_answers_are_said_to_mean_nothing(model, tmp_path, monkeypatch, capsys):
    code, _ = ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", "--question=Who?", "--model-name=bert-random")
    assert code == 0 and "note: a random-weight model (_random): plumbing only, its answers and scores mean nothing" \
        in capsys.readouterr().out
    saved = json.loads((tmp_path / "qa.json").read_text())
    assert saved["qa"]["model_name"] == "bert-random"
    # the line `mlrun runs` and `runs show` give the run (they said "-")
    from engine import records
    assert saved["headline"] == "1 answer, random weights" == records.headline(saved)
    from engine.results import headline
    assert headline(records.flat({"steps": [], "results": saved})) == "1 answer, random weights"
    ask(model, tmp_path, monkeypatch, "", f"--passage={PASSAGE}", "--question=Who?", "--model-name=minilm-squad")
    assert "note:" not in capsys.readouterr().out
    assert json.loads((tmp_path / "qa.json").read_text())["headline"] == "1 answer"


@pytest.mark.parametrize("stdin, args, message", [
    ("", [f"--passage={PASSAGE}"], "no question was read from standard input"),   # was exit 0, no answer
    ("Who?\n", ["--passage=\x00\x01\x02"], "the passage is empty"),                 # was 'answer: empty'
    ("", [f"--passage={PASSAGE}", "--question=\u200b"], "has no words the model reads"),
])
def test_nothing_to_answer_is_a_usage_error(model, tmp_path, monkeypatch, capsys, stdin, args, message):
    code, _ = ask(model, tmp_path, monkeypatch, stdin, *args)
    assert code == 2 and message in capsys.readouterr().err


def test_control_characters_never_reach_an_answer():
    """An answer is words of the passage: 'Paris\\x00' went to the terminal and qa.json."""
    from mlperf_bert.tokenization import FullTokenizer
    words = qa.Passage("Paris\x00 is the \x01capital\x02 of France.", FullTokenizer(VOCAB)).example["doc_tokens"]
    assert words == ["Paris", "is", "the", "capital", "of", "France."]


@pytest.mark.parametrize("inputs, fragment", [
    ({"question_file": "/tmp"}, "app-bert-qa: --question_file: /tmp is a folder, not a file"),   # failed in the step
    ({"model": "hf:"}, "app-bert-qa: --model=hf: is not of the form the input takes"),   # failed in the model step
])
def test_the_qa_app_refuses_a_folder_or_a_malformed_model_when_planning(inputs, fragment):
    import os

    from conftest import ROOT
    from engine.errors import ResolutionError
    from engine.index import RecipeIndex
    from engine.resolver import resolve
    with pytest.raises(ResolutionError) as info:
        resolve(RecipeIndex([os.path.join(ROOT, "recipes")]), "app bert qa", inputs=inputs, host_env={})
    assert fragment in info.value.message


def test_a_passage_too_long_to_window_is_refused_with_its_size(model, tmp_path, monkeypatch, capsys):
    """A 1-MB passage took 3.4 GB and 22 s to window per question (a float per WordPiece and window), then
    minutes of windows with nothing on the screen; a larger one was killed for memory."""
    words = " ".join(f"word{i % 997}" for i in range(qa.MAX_PIECES // 2))   # "word123" is several pieces
    code, answers = ask(model, tmp_path, monkeypatch, "", "--passage", words, "--question", "Which word?")
    err = capsys.readouterr().err
    assert code == 2 and answers is None
    assert "the passage is too long for the QA app:" in err and "WordPieces" in err and "at most 50,000" in err
    code, _ = ask(model, tmp_path, monkeypatch, "", "--passage", "x " * (21 * qa.MAX_PIECES), "--question", "Which?")
    assert code == 2 and "characters; it takes at most" in capsys.readouterr().err   # refused before tokenising


def test_a_question_over_many_windows_draws_a_bar_on_the_terminal_only(model, tmp_path, monkeypatch, capsys):
    terminal = tmp_path / "terminal"
    monkeypatch.setenv("MLRUN_PROGRESS", str(terminal))   # where mlrun names its terminal
    passage = " ".join(["Paris is the capital of France."] * 600)   # 4,200 pieces: 20 windows
    code, answers = ask(model, tmp_path, monkeypatch, "", "--passage", passage, "--question", "What is Paris?")
    assert code == 0 and answers[0]["windows"] >= qa.BAR_FROM
    assert f"{answers[0]['windows']} windows" in terminal.read_text()
    assert "windows:" not in capsys.readouterr().out   # never in the answers (the step's log)
