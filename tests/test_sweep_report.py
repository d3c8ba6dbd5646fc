"""`mlrun sweep plot` (matplotlib PNG) and `mlrun report` (one self-contained HTML page).

The plots are checked as pictures (PIL: format, size, many colours) and as data (the chart decided, the
artists drawn, the summary written into the PNG). The page is opened in a real headless Chromium (Debian's
`chromium`): what it renders is read back from its DOM and a screenshot. The end-to-end tests run one real
2x2 sweep of the BERT benchmark with a tiny random model (two of its points fail for real: a model of a fixed
sequence length 16 cannot take the 384-long features; the harness refuses it after the builds), built once for
the module.
"""
import base64
import html
import io
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import assert_user_error, offline_mlrun

from PIL import Image  # installed with matplotlib (requirements.txt)

from engine import records
from engine.errors import MlrunError, UsageError
from sweeps import plot, report

QUERY = "app mlperf bert _onnxruntime _cpu _random"


# -- rows in the shape sweeps.table.rows gives -------------------------------------------------


def sweep_data(fail=("_deepsparse", 16)):
    """A 3x2 sweep record and its rows: throughput rising with the batch size, one point failed."""
    data = {"name": "bs-backend", "query": QUERY,
            "request": {"inputs": {"mode": "performance", "scenario": "Offline", "count": 64},
                        "dep_overrides": {"model": {"layers": "2"}}, "env_overrides": {"HF_TOKEN": "hf_secret_value"}},
            "grid": {"batch_size": ["1", "4", "16"], "backend": ["_onnxruntime", "_deepsparse"]},
            "kinds": {"batch_size": "input", "backend": "variation"}, "points": []}
    rows = []
    for i, (backend, bs) in enumerate((b, s) for b in data["grid"]["backend"] for s in (1, 4, 16)):
        ok = (backend, bs) != fail
        rows.append({"point": f"p{i:03d}", "point_status": "ok" if ok else "failed", "batch_size": bs,
                     "backend": backend.lstrip("_"), "mode": "performance", "run": f"run-{i}" if ok else None,
                     "error": None if ok else "step app-mlperf-bert failed: exited with code 1",
                     "samples_per_second": (100.0 + 10 * i) * (1.5 if backend == "_deepsparse" else 1) if ok else None,
                     "latency_p90_ms": 20.0 - i if ok else None, "result": "VALID" if ok else None})
    return data, rows


def png_info(data):
    img = Image.open(io.BytesIO(data))
    return img, json.loads(img.text["mlrun"])


def assert_picture(img, size, background=0.97):
    """A PNG of that size with something drawn: many colours (lines, text, antialiasing), not all background."""
    assert img.format == "PNG" and img.size == size
    colours = img.convert("RGB").getcolors(maxcolors=1 << 22)
    assert len(colours) > 50, f"{len(colours)} colours"
    most = max(colours)[0] / (size[0] * size[1])
    assert most < background, f"{most:.0%} of the picture is one colour"


# -- plots ------------------------------------------------------------------------------------


def test_units_and_directions_come_from_field_names():
    assert plot.axis_label("samples_per_second") == "samples_per_second (samples/s)"
    assert plot.unit("latency_p90_ms") == "ms" and plot.unit("f1") == "%" and plot.unit("exact_match") == "%"
    assert plot.unit("seconds") == "s" and plot.unit("batch_size") is None
    assert [plot.direction(f) for f in ("samples_per_second", "f1", "exact_match", "latency_p99_ms", "seconds",
                                        "batch_size")] == ["max", "max", "max", "min", "min", None]


@pytest.mark.slow   # about 0.7 s on the EPYC
def test_line_plot_png_with_series_best_point_and_left_out_caption():
    data, rows = sweep_data()
    c, png = plot.render(data, rows, x="batch_size", by="backend", size=(640, 400))
    img, info = png_info(png)
    assert_picture(img, (640, 400))
    assert info["kind"] == "line" and info["y"] == "samples_per_second"   # the default y of performance points
    assert info["series"] == ["onnxruntime", "deepsparse"] and info["points"] == 5
    assert info["best"] == {"point": "p004", "series": "deepsparse", "x": 4, "y": 210.0, "direction": "max"}
    assert info["left_out"] == [{"point": "p005", "why": "failed"}]
    # What is drawn: one line per series over numeric x, the best point starred where it is, the caption.
    fig = plot.figure(c, "t")
    ax = fig.axes[0]
    lines = {l.get_label(): l for l in ax.lines}
    assert list(lines["onnxruntime"].get_xdata()) == [1, 4, 16]
    assert list(lines["deepsparse"].get_ydata()) == [195.0, 210.0]
    best = [l for l in ax.lines if l.get_gid() == "best"]
    assert len(best) == 1 and (list(best[0].get_xdata()), list(best[0].get_ydata())) == ([4], [210.0])
    assert "p004: batch_size=4, backend=deepsparse" in [t for t in ax.texts if t.get_gid() == "best-note"][0].get_text()
    assert ax.get_xlabel() == "batch_size" and ax.get_ylabel() == "samples_per_second (samples/s)"
    assert ax.get_legend().get_title().get_text() == "backend"
    assert any("left out: 1 failed (p005)" in t.get_text() for t in fig.texts)
    # The title holds the sweep and its fixed settings (secrets masked).
    title = plot.title_lines("bs-backend", QUERY, plot.fixed_settings(data))
    assert "count=64" in title and "dep.model.layers=2" in title and "hf_secret_value" not in title


@pytest.mark.slow   # about 0.9 s on the 2-core EPYC
def test_bar_chart_for_categories_and_for_a_single_x_value():
    data, rows = sweep_data()
    c, png = plot.render(data, rows, x="backend", y="latency_p90_ms", by="batch_size")
    img, info = png_info(png)
    assert_picture(img, plot.DEFAULT_SIZE)
    assert info["kind"] == "bar" and info["series"] == ["1", "4", "16"]
    assert c.categories == ["onnxruntime", "deepsparse"]   # the grid's order
    # Lower latency is better: the best is the smallest, marked on its bar.
    assert info["best"]["point"] == "p004" and info["best"]["direction"] == "min"
    ax = plot.figure(c, "t").axes[0]
    assert len(ax.patches) == 5 and [t.get_text() for t in ax.get_xticklabels()] == ["onnxruntime", "deepsparse"]
    # A numeric x with one value is a bar too.
    one = [dict(r, batch_size=8) for r in rows if r["point"] in ("p000", "p003")]
    c, _ = plot.render(data, one, x="batch_size", by="backend")
    assert c.kind == "bar" and c.categories == ["8"] and list(c.series) == ["onnxruntime", "deepsparse"]
    # Two points of one series at one x value (x not a grid axis) are two bars, not an average.
    c, _ = plot.render(data, [dict(r, batch_size=8) for r in rows], x="batch_size")
    assert c.categories == ["8 (p000)", "8 (p001)", "8 (p002)", "8 (p003)", "8 (p004)"]


def test_other_varying_axes_split_series_never_averaged():
    data, rows = sweep_data(fail=None)
    rows += [dict(r, point=r["point"] + "t", threads=2) for r in rows]
    for r in rows:
        r.setdefault("threads", 1)
    data["grid"]["threads"] = ["1", "2"]
    c = plot.chart(rows, "batch_size", "samples_per_second", "backend", data["grid"])
    assert sorted(c.series) == ["backend=deepsparse, threads=1", "backend=deepsparse, threads=2",
                                "backend=onnxruntime, threads=1", "backend=onnxruntime, threads=2"]
    assert all(len(points) == 3 for points in c.series.values())


def test_default_y_is_f1_for_accuracy_points():
    rows = [{"point": "p000", "point_status": "ok", "mode": "accuracy", "f1": 1.5, "batch_size": 1},
            {"point": "p001", "point_status": "ok", "mode": "accuracy", "f1": 2.5, "batch_size": 2}]
    c, _ = plot.render({"name": "acc", "grid": {"batch_size": ["1", "2"]}}, rows)
    assert (c.x, c.y, c.kind, c.best["point"]) == ("batch_size", "f1", "line", "p001")


def test_a_server_sweeps_best_is_the_point_that_completed_most_not_the_least_loaded():
    """Ranked by p90 latency, the point that carried 82 samples/s was "best" over one that carried 400."""
    rows = [{"point": "p000", "point_status": "ok", "mode": "performance", "scenario": "Server", "instances": 1,
             "completed_samples_per_second": 400.1, "latency_p90_ms": 30.0, "result": "VALID"},
            {"point": "p001", "point_status": "ok", "mode": "performance", "scenario": "Server", "instances": 2,
             "completed_samples_per_second": 82.0, "latency_p90_ms": 12.9, "result": "VALID"}]
    c, _ = plot.render({"name": "srv", "grid": {"instances": ["1", "2"]}}, rows)
    assert (c.y, c.best["point"]) == ("completed_samples_per_second", "p000")
    from sweeps import report
    assert [y for _, y, _ in report.plot_choices({"grid": {"instances": ["1", "2"]}}, rows)] == \
        ["completed_samples_per_second"]


def test_text_with_dollars_is_drawn_as_written_and_many_series_get_their_own_colours():
    """A $ started matplotlib's math mode: '$\\foo{' failed (no plot, no report), '$ORIGIN/lib' went italic."""
    data, rows = sweep_data()
    data["request"]["env_overrides"] = {"A": "$ORIGIN/lib", "B": "$\\foo{"}
    for r in rows:
        r["backend"] = "$\\alpha$ " + r["backend"]
    c, png = plot.render(data, rows, x="batch_size", by="backend")
    assert_picture(png_info(png)[0], plot.DEFAULT_SIZE)
    fig = plot.figure(c, plot.title_lines(data["name"], data["query"], plot.fixed_settings(data), 960),
                      plot.DEFAULT_SIZE)
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    assert any("env.A=$ORIGIN/lib" in t for t in texts) and all(not t.get_parse_math() for t in fig.texts)
    many = [dict(r, backend=f"b{i}", point_status="ok", samples_per_second=1.0 + i) for i, r in
            enumerate(rows * 4)]
    c, _ = plot.render(data, many, x="batch_size", by="backend")
    fig = plot.figure(c, "t", plot.DEFAULT_SIZE)
    looks = {(str(line.get_color()), line.get_linestyle())
             for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    assert len(c.series) > 20 and len(looks) == len(c.series)   # was 10 colours, repeated


def test_the_report_marks_short_runs_and_keeps_its_page_when_a_plot_fails(monkeypatch):
    data, rows = sweep_data()
    rows[0]["short"] = True
    table = report.points_table("s", rows, ["batch_size", "backend"], {})
    assert '<td class="num">VALID (short)</td>' in table and table.count("(short)") == 1   # was plain VALID
    monkeypatch.setattr(plot, "render", lambda *a, **k: 1 / 0)
    assert "No plot of samples_per_second against batch_size: unexpected ZeroDivisionError" in report.plots(data, rows)


def test_the_default_x_axis_varies_among_the_points_that_ran():
    """fail=false,true with threads=1,2: fail varied among all points, and was drawn as one bar group."""
    rows = [{"point": f"p{i}", "point_status": "failed" if fail else "ok", "fail": fail, "threads": t,
             "samples_per_second": None if fail else 10.0 * t} for i, (fail, t) in
            enumerate((f, t) for f in (False, True) for t in (1, 2))]
    data = {"name": "f1", "grid": {"fail": ["false", "true"], "threads": ["1", "2"]}}
    assert plot.render(data, rows)[0].x == "threads"
    assert [x for x, _, _ in report.plot_choices(data, rows)] == ["threads"]


def test_unknown_field_and_nothing_to_plot_are_clear_errors():
    data, rows = sweep_data()
    with pytest.raises(UsageError) as e:
        plot.render(data, rows, x="batchsize")
    assert "no field 'batchsize' (--x); did you mean batch_size?" in e.value.message
    assert "batch_size" in e.value.hint
    assert "samples_per_second" in e.value.hint
    # a dozen names, the results first (was every field, about 90, on one 2,000-character line)
    many = [dict(r, **{f"extra_{i:02d}": 1 for i in range(40)}) for r in rows]
    with pytest.raises(UsageError) as e:
        plot.render(data, many, x="batchsize")
    assert "samples_per_second" in e.value.hint.split(" extra_")[0] and len(e.value.hint) < 400, e.value.hint
    assert " more (`mlrun sweep show " in e.value.hint
    with pytest.raises(UsageError, match="sweep plot --by batch_size is also --x"):   # 'batch_size=1, batch_size=1'
        plot.render(data, rows, x="batch_size", by="batch_size")
    with pytest.raises(UsageError, match="sweep plot --x batch_size is also --y"):   # a diagonal, "best" its largest
        plot.render(data, rows, x="batch_size", y="batch_size")
    failed = [dict(r, point_status="failed", samples_per_second=None, latency_p90_ms=None) for r in rows]
    with pytest.raises(MlrunError) as e:
        plot.render(data, failed, x="batch_size", y="samples_per_second")
    assert "no point to plot" in e.value.message and "6 failed" in e.value.message
    with pytest.raises(UsageError, match="no field 'nosuch' \\(--x\\)"):   # it said "no point has a result to plot"
        plot.render(data, failed, x="nosuch")
    with pytest.raises(MlrunError, match="no point has a result to plot"):   # a good --x: the points' problem
        plot.render(data, failed, x="batch_size")
    with pytest.raises(MlrunError, match=r"no point has a result to plot \(1 point: failed\)"):   # "1 points"
        plot.render(data, failed[:1], x="batch_size")
    assert "<p>1 point: " in report.section(0, data, failed[:1], {})   # it said "1 points"
    texts = [dict(r, backend="onnxruntime") for r in rows]   # was: 'no point to plot: left out: 6 no backend'
    with pytest.raises(UsageError, match="--y backend holds text \\(onnxruntime\\), and the y axis is a number"):
        plot.render(data, texts, x="batch_size", y="backend")
    with pytest.raises(UsageError):
        plot.parse_size("big")


# -- the page ----------------------------------------------------------------------------------


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        print("SKIP: chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return exe


def browse(tmp_path, page, *flags):
    """Chromium, headless, on a file: its stdout (--dump-dom) and what it wrote."""
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-extensions", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                          "--window-size=1400,2400", *flags, f"file://{page}"],
                         capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


# Added to the test's copy of the page only (the page itself has no script): the decoded size of each image.
PROBE = """<script>window.addEventListener('load', () => { for (const img of document.images)
  img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight); });</script>"""


def rendered(tmp_path, html_path):
    """(DOM after load with the images' decoded sizes, screenshot) of a page as Chromium shows it."""
    text = open(html_path).read()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = browse(tmp_path, probe, "--dump-dom", "--virtual-time-budget=5000")
    shot = tmp_path / "shot.png"
    browse(tmp_path, html_path, f"--screenshot={shot}")
    return dom, Image.open(shot)


def assert_self_contained(text):
    assert "<script" not in text.lower(), "the page needs no script"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.I), "nothing is fetched"
    assert "http://" not in text and "https://" not in text


@pytest.mark.slow
def test_page_escapes_markup_and_shows_a_sweep_whose_points_all_failed(tmp_path):
    data, rows = sweep_data()
    data["query"] = QUERY + " <script>document.body.dataset.pwned = 'query'</script>"
    for r in rows:
        r.update(point_status="failed", samples_per_second=None, latency_p90_ms=None, result=None, run=None,
                 error='<img src=x onerror="document.body.dataset.pwned=\'error\'">step failed\nsecond line')
    page = tmp_path / "report.html"
    page.write_text(report.page([(data, rows, {})]))
    text = page.read_text()
    assert_self_contained(text)
    assert "&lt;script&gt;document.body.dataset.pwned" in text and "hf_secret_value" not in text
    dom, shot = rendered(tmp_path, page)
    assert "data-pwned" not in dom, "markup from a query or an error ran"
    body = dom[dom.index("<body"):]
    assert "&lt;script&gt;document.body.dataset.pwned = 'query'&lt;/script&gt;" in body   # shown as text
    assert body.count('class="failed">failed</td>') == 6 and "No plot" in body
    assert "&lt;img src=x onerror=" in body
    assert_picture(shot, (1400, 2400), background=0.995)   # a page of text and tables, no plot


def test_page_of_two_sweeps_links_each_and_masks_secrets(tmp_path):
    one, rows_one = sweep_data()
    two, rows_two = sweep_data(fail=None)
    two["name"] = "again"
    text = report.page([(one, rows_one, {}), (two, rows_two, {})])
    assert '<a href="#s0">sweep bs-backend</a>' in text and '<a href="#s1">sweep again</a>' in text
    assert '<section id="s1">' in text and '<tr id="s1-p005">' in text
    assert text.count("<img ") == 4 and "hf_secret_value" not in text and "&lt;redacted&gt;" in text
    # The best value of each result column is marked, among the points that finished ok.
    assert '<td class="num best">210.0</td>' in text


# -- end to end: a real sweep, `sweep plot`, `report` ------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory, bert_seed):
    """One real sweep, 2 batch sizes x 2 sequence axes of a tiny random BERT: seq=16 fails in the harness."""
    mlrun = offline_mlrun(tmp_path_factory.mktemp("sweep-report"), seed=bert_seed.cache)
    result = mlrun("sweep", QUERY, "--mode=performance", "--scenario=Offline", "--count=16", "--min_duration=300",
                   "--dep.model.layers=2", "--dep.model.hidden=64", "--dep.model.heads=2",
                   "--grid", "batch_size=1,4", "--grid", "dep.model.seq=dynamic,16", "--name", "bs-seq")
    assert result.returncode == 1, result.stderr[-3000:]   # a sweep with failed points exits 1
    show = mlrun("sweep", "show", "bs-seq", "--json")
    assert show.returncode == 0, show.stderr
    rows = json.loads(show.stdout)
    assert [(r["point"], r["point_status"]) for r in rows] == [("p000", "ok"), ("p001", "failed"), ("p002", "ok"),
                                                                ("p003", "failed")]
    mlrun.rows = rows
    return mlrun


@pytest.mark.slow
def test_sweep_plot_of_a_real_sweep(swept, tmp_path):
    out = tmp_path / "bs.png"
    result = swept("sweep", "plot", "bs-seq", "--x", "batch_size", "--by", "dep.model.seq", "-o", str(out),
                   "--size", "800x500")
    assert result.returncode == 0, result.stderr
    assert "line chart of samples_per_second against batch_size" in result.stdout
    assert "left out: 2 failed (p001, p003)" in result.stdout
    img, info = png_info(out.read_bytes())
    assert_picture(img, (800, 500))
    # the best among the runs LoadGen called VALID (an INVALID one was starred, nothing saying so), else said INVALID
    ran = [r for r in swept.rows if r["point_status"] == "ok"]
    valid = [r for r in ran if r.get("result") != "INVALID"]
    ok = {r["point"]: r["samples_per_second"] for r in valid or ran}
    best = max(ok, key=ok.get)
    assert info["kind"] == "line" and info["series"] == ["dynamic"] and info["points"] == 2
    assert info["best"]["point"] == best and info["best"]["y"] == ok[best]   # the measured figure, as recorded
    assert info["best"].get("invalid", False) == (not valid)
    assert ("(every run INVALID)" in result.stdout) == (not valid), result.stdout
    # x with one value among the points that ran: bars.
    result = swept("sweep", "plot", "bs-seq", "--x=dep.model.seq", "--by=batch_size", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert png_info(out.read_bytes())[1]["kind"] == "bar"
    # Mistakes are one line each.
    assert_user_error(swept("sweep", "plot", "bs-seq", "--x", "batchsize", "-o", str(out)), 2,
                      "no field 'batchsize'", "batch_size", "samples_per_second")
    assert_user_error(swept("sweep", "plot", "nope", "-o", str(out)), 2, "no sweep 'nope'", "bs-seq")
    assert_user_error(swept("sweep", "plot", "bs-seq"), 2, "-o/--output")
    assert_user_error(swept("sweep", "plot", "bs-seq", "-o", str(tmp_path / "no" / "such" / "dir.png")), 2,
                      "cannot write the plot")
    assert_user_error(swept("sweep", "plot", "bs-seq", "-o", str(tmp_path / "y.txt")), 2,
                      "it writes a PNG; name the file .png")   # was: a PNG written as y.txt
    assert_user_error(swept("report", "bs-seq", "-o", "-"), 2, "-o - would be a file or folder named '-'")
    assert_user_error(swept("report", "bs-seq", "-o", str(tmp_path / "r.pdf")), 2,
                      "it writes an HTML page; name the file .html")   # was: HTML written as r.pdf
    assert not (tmp_path / "r.pdf").exists()
    assert not os.path.exists(os.path.join(swept.root, "-"))   # was written there


@pytest.mark.slow
def test_report_page_rendered_by_chromium(swept, tmp_path):
    chromium()
    page = tmp_path / "report.html"
    result = swept("report", "bs-seq", "-o", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert_self_contained(text)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    # samples_per_second against each grid axis that varies among the points that ran: batch_size, by seq (every
    # seq=16 point failed: a plot against seq was one bar group)
    assert len(images) == 1
    for data in images:
        assert_picture(Image.open(io.BytesIO(base64.b64decode(data))), report.PLOT_SIZE)
    dom, shot = rendered(tmp_path, page)
    # The images decoded at their full size.
    assert re.findall(r'data-natural="(\d+x\d+)"', dom) == ["x".join(map(str, report.PLOT_SIZE))]
    # One table row per point, with its status and its measured figure as `sweep show` has it.
    from engine.results import show
    rows = dict(chunk.split('">', 1) for chunk in dom.split('<tr id="s0-')[1:])   # point -> its row, onwards
    assert list(rows) == ["p000", "p001", "p002", "p003"]
    for r in swept.rows:
        cells = rows[r["point"]]
        assert f'class="{r["point_status"]}">{r["point_status"]}</td>' in cells
        assert f"<td>{r['run']}</td>" in cells
        if r["point_status"] == "ok":
            assert f">{show('samples_per_second', r['samples_per_second'])}</td>" in cells
        else:
            assert "app-mlperf-bert _onnxruntime _cpu _random failed" in cells
        # The run's exact command is one click away.
        record = json.load(open(os.path.join(swept.root, "runs", r["run"], "run.json")))
        details = re.search(r"<details>(.*?)</details>", cells, re.S)[1]
        assert 'class="command">' in details and "--dep.model.seq=" in details
        # as a shell takes it, with the places the point had from MLRUN_* (it runs pasted elsewhere)
        expected = records.command(record)
        assert expected.startswith("mlrun --cache ") and shlex.join(record["argv"][1:]) in expected
        assert expected in html.unescape(details)
    assert_picture(shot, (1400, 2400), background=0.95)


def test_an_ok_point_whose_run_record_is_gone_is_left_out_for_that():
    """It was left out as having "no samples_per_second" (its record removed after the sweep: a user's trial)."""
    rows = [{"point": "p000", "point_status": "ok", "threads": 1, "run": "2026", "error": "its run 2026 is gone"},
            {"point": "p001", "point_status": "ok", "threads": 2, "samples_per_second": 5.0}]
    assert plot.chart(rows, "threads", "samples_per_second").left_out == [("p000", "its run record unreadable")]


def test_the_report_says_a_best_of_invalid_runs_as_the_plot_does():
    """The page's caption left out "(every run INVALID)", which `sweep plot` said (a user's trial)."""
    data, rows = sweep_data(fail=())
    html_text = report.plots(data, [dict(r, result="INVALID") for r in rows])
    assert "(every run INVALID)</figcaption>" in html_text
    assert "INVALID)</figcaption>" not in report.plots(data, rows)


def test_the_best_point_is_a_valid_run_and_a_tie_is_no_best():
    """An INVALID run (455.7/s, short) got the star and the report's bold, nothing saying it was INVALID; points that
    all scored 0 had one of them starred (a user's trial)."""
    def row(point, x, y, result):
        return {"point": point, "point_status": "ok", "threads": x, "samples_per_second": y, "result": result}
    rows = [row("p000", 1, 300.0, "VALID"), row("p001", 2, 455.7, "INVALID"), row("p002", 4, 350.0, "VALID")]
    assert plot.chart(rows, "threads", "samples_per_second").best["point"] == "p002"
    assert report.best_values(rows, ["samples_per_second"]) == {"samples_per_second": 350.0}
    every = plot.chart([{**r, "result": "INVALID"} for r in rows], "threads", "samples_per_second").best
    assert every["point"] == "p001" and every["invalid"] is True   # short tuning runs: the best of them, said so
    one = rows[:2]   # the one VALID run is the best, slower or not (a lone candidate is no tie)
    assert plot.chart(one, "threads", "samples_per_second").best["point"] == "p000"
    assert report.best_values(one, ["samples_per_second"]) == {"samples_per_second": 300.0}
    tied = [{**r, "samples_per_second": 0.0} for r in rows]
    assert plot.chart(tied, "threads", "samples_per_second").best is None
    assert report.best_values(tied, ["samples_per_second"]) == {}
    # An Offline run's latency is no figure to rank (it starred Offline's 1137 ms over Server's 3.95)
    mixed = [{"point": "p000", "point_status": "ok", "scenario": "Offline", "latency_p99_ms": 1137.0, "result": "VALID"},
             {"point": "p001", "point_status": "ok", "scenario": "Server", "latency_p99_ms": 3.95, "result": "INVALID"},
             {"point": "p002", "point_status": "ok", "scenario": "Server", "latency_p99_ms": 5.1, "result": "INVALID"}]
    best = plot.chart(mixed, "point", "latency_p99_ms").best   # Offline's was the one VALID run: starred
    assert best["point"] == "p001" and best["invalid"] is True
    assert report.best_values(mixed[:1] + mixed[2:], ["latency_p99_ms"]) == {"latency_p99_ms": 5.1}
    assert report.best_values(mixed[:1], ["latency_p99_ms"]) == {}


def test_a_long_title_stays_inside_the_picture():
    """Wrapped at 7 pixels a character, a line of fixed settings ran 60 pixels past a 960-pixel picture (the title
    of a cluster sweep ended at 'dep.model.h')."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    data, rows = sweep_data()
    fixed = {"dep.model.layers": "2", "dep.model.hidden": "64", "dep.model.heads": "2", "count": "20",
             "mirror": "../shared/data", "mode": "performance", "scenario": "SingleStream", "min_duration": "8000",
             "cache": "/work/main/cache"}
    c, _ = plot.render(data, rows, x="batch_size", by="backend")
    fig = plot.figure(c, plot.title_lines("rayint", "app mlperf bert _onnxruntime _cpu _random", fixed, 960),
                      plot.DEFAULT_SIZE)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    assert fig._suptitle.get_window_extent(canvas.get_renderer()).x1 <= fig.bbox.width


def test_a_servers_throughput_is_in_samples_per_second():
    """Server's main result was labelled 'completed_samples_per_second (completed_samples/s)', on its plots' y axis
    and in the report's table."""
    assert plot.unit("completed_samples_per_second") == "samples/s" == plot.unit("scheduled_samples_per_second")
    assert plot.axis_label("completed_samples_per_second") == "completed_samples_per_second (samples/s)"


def test_a_huge_figure_is_shown_in_few_digits():
    """A figure of 1e30 read '1000000000000000019884624838656' in the plot's note and `sweep best` (digits a float
    does not hold), and `sweep show` cut it to '1000000000...'."""
    rows = [{"point": "p000", "point_status": "ok", "threads": 1, "samples_per_second": 1e30, "result": "VALID"},
            {"point": "p001", "point_status": "ok", "threads": 2, "samples_per_second": 2.5e16, "result": "VALID"}]
    c = plot.chart(rows, "threads", "samples_per_second")
    assert plot.best_said(c) == "; best: p000: threads=1 = 1e+30"
    from engine.results import show
    assert [show("samples_per_second", v) for v in (2.5e16, 123456789012345.6, 1234.5)] == \
        ["2.5e+16", "123456789012346", "1234"]


def test_a_value_left_to_mlrun_keeps_its_place_in_the_grids_order():
    """--grid threads=-,1 drew its bars '1', '- (1)': the point not given went last, whatever the grid's order."""
    rows = [{"point": f"p00{i}", "point_status": "ok", "threads": t, "samples_per_second": 10.0 + i}
            for i, t in enumerate(("- (2)", "1", "4"))]
    c = plot.chart(rows, "threads", "samples_per_second", grid={"threads": ["-", "1", "4"]})
    assert c.kind == "bar" and c.categories == ["- (2)", "1", "4"]
    c = plot.chart(rows, "threads", "samples_per_second", grid={"threads": ["4", "-", "1"]})
    assert c.categories == ["4", "- (2)", "1"]


@pytest.mark.slow   # about 1 s each on the 2-core machine
@pytest.mark.parametrize("values", [[f"/home/someone/confs/tuning-file-number-{i}.conf" for i in range(12)],
                                    [f"onnxruntime==1.{i}.0" for i in range(40)]])
def test_many_or_long_text_values_are_bar_labels_that_do_not_overlap(values):
    """12 paths of user.conf files, or 40 package pins, drew their labels side by side over each other: one smear."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    rows = [{"point": f"p{i:03d}", "point_status": "ok", "user_conf": v, "samples_per_second": 10.0 + i}
            for i, v in enumerate(values)]
    c = plot.chart(rows, "user_conf", "samples_per_second", grid={"user_conf": values})
    for size in (plot.DEFAULT_SIZE, report.PLOT_SIZE):
        fig = plot.figure(c, "t", size)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        boxes = [t.get_window_extent(canvas.get_renderer()) for t in fig.axes[0].get_xticklabels()]
        assert len(boxes) == len(values)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), "labels overlap"
        assert all(b.x0 >= 0 and b.x1 <= size[0] and b.y0 >= 0 for b in boxes), "a label is cut off"
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(set(labels)) == len(values) and all(v.endswith(t.lstrip(".")) for v, t in zip(values, labels))


def test_a_series_of_points_without_the_by_value_reads_as_sweep_show_writes_it():
    """--by user_conf, given to no point, drew the series 'user_conf=None, threads=1' (Python's word for nothing)."""
    rows = [{"point": f"p00{i}", "point_status": "ok", "batch_size": b, "threads": t, "user_conf": None,
             "samples_per_second": 10.0 + i} for i, (b, t) in enumerate(((1, 1), (4, 1), (1, 2), (4, 2)))]
    grid = {"batch_size": ["1", "4"], "threads": ["1", "2"]}
    c = plot.chart(rows, "batch_size", "samples_per_second", "user_conf", grid)
    assert list(c.series) == ["user_conf=-, threads=1", "user_conf=-, threads=2"]
    assert list(plot.chart(rows[:2], "batch_size", "samples_per_second", "user_conf", grid).series) == ["-"]
    empty = [{**r, "user_conf": ""} for r in rows[:2]]   # was named 'samples_per_second', the y field
    assert list(plot.chart(empty, "batch_size", "samples_per_second", "user_conf", grid).series) == ["-"]


def test_long_bar_labels_alike_at_their_end_are_cut_before_it():
    """Paths that differ only at their start (/home/user1/.../user.conf) read alike cut to their end, so they stood
    whole: upright, 140 characters ran off the bottom of the picture, what told them apart with them."""
    values = [f"/home/user{i}/" + "x" * 120 + "/user.conf" for i in range(6)]
    labels = plot.tick_labels(values, plot.DEFAULT_SIZE[0] - 100)
    assert len(set(labels)) == len(values) and all(len(t) <= plot.LONGEST_TICK for t in labels), labels
    assert labels[1] == "/home/user1..."
    rows = [{"point": f"p{i:03d}", "point_status": "ok", "user_conf": v, "samples_per_second": 10.0 + i}
            for i, v in enumerate(values)]
    c = plot.chart(rows, "user_conf", "samples_per_second", grid={"user_conf": values})
    [note] = [t for t in plot.figure(c, "t").axes[0].texts if t.get_gid() == "best-note"]   # whole, it squeezed the
    assert note.get_text().endswith("\np005: user_conf=/home/user5..."), note.get_text()   # axes to a sliver
    assert f"user_conf={values[5]} = 15" in plot.best_said(c)   # what mlrun prints: whole
    alike = ["a" * 40 + "-1", "b" * 40 + "-1"]   # nothing shared at the end to cut before: the end cut stays
    assert plot.tick_labels(alike, 100) == ["..." + "a" * 19 + "-1", "..." + "b" * 19 + "-1"]
