"""Timing spans as a Chrome trace, and the nested HTML log tree."""

import json
import threading
import time

from jaxcook.logging import logtree, trace


def test_spans_nest_per_thread_and_export_as_a_chrome_trace(tmp_path):
    @trace.scope("work/inner")
    def inner():
        time.sleep(0.01)

    @trace.scope
    def bare():
        return 7

    def worker():
        with trace.scope("worker/job", n=2):
            time.sleep(0.005)

    path = tmp_path / "trace.json"
    with trace.tracing(path):
        with trace.scope("work/outer", step=3):
            inner()
            assert bare() == 7
        t = threading.Thread(target=worker, name="helper")
        t.start()
        t.join()
        start = time.perf_counter()
        trace.record("work/measured", start - 0.002, start, k="v")
    with trace.scope("after"):  # no active tracer: nothing recorded
        pass
    events = json.loads(path.read_text())["traceEvents"]
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert set(spans) == {"work/outer", "work/inner", bare.__qualname__, "worker/job", "work/measured"}
    outer, inner_span = spans["work/outer"], spans["work/inner"]
    assert outer["args"] == {"step": 3} and inner_span["dur"] >= 10_000  # microseconds
    assert (
        outer["ts"] <= inner_span["ts"] and inner_span["ts"] + inner_span["dur"] <= outer["ts"] + outer["dur"]
    )
    assert spans["worker/job"]["tid"] != outer["tid"] and spans["worker/job"]["args"] == {"n": 2}
    assert abs(spans["work/measured"]["dur"] - 2000) < 1.0
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "helper" in names


def test_log_tree_nests_scopes_escapes_text_and_shades_weights(tmp_path):
    page = tmp_path / "r.html"
    logtree.text("not recorded: no active report")
    with logtree.report(page, title="Report <1>"):
        with logtree.scope("outer", open=True):
            logtree.text("<script>alert(1)</script>")
            with logtree.scope("inner"):
                logtree.table([{"a": 1, "b": 0.123456}, {"a": 2, "c": "x"}])
            logtree.conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
            logtree.weighted_tokens(["A", "B", "C"], [0.0, 2.0, 1.0])
    html = page.read_text()
    assert "not recorded" not in html and "<script>" not in html and "&lt;script&gt;" in html
    assert html.index("<details open><summary>outer</summary>") < html.index(
        "<details><summary>inner</summary>"
    )
    assert html.index("<summary>inner</summary>") < html.index("<th>a</th><th>b</th><th>c</th>")
    assert "<pre>0.1235</pre>" in html  # floats to 4 significant digits
    # Shading is weight / max weight: 0 -> 0, 2 -> 1, 1 -> 0.5.
    assert 'title="weight 0" style="background:rgba(46,158,87,0.000)">A<' in html
    assert 'title="weight 2" style="background:rgba(46,158,87,1.000)">B<' in html
    assert 'title="weight 1" style="background:rgba(46,158,87,0.500)">C<' in html
    assert html.count("<details") == html.count("</details>") == 2
