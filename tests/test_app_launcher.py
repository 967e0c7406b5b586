"""``python -m routescope.app.serve``: warm the process, then Streamlit's own ``streamlit run`` on the app."""

from __future__ import annotations

import sys

from routescope.app import serve


def test_the_launcher_warms_then_runs_streamlit_on_the_app(monkeypatch):
    calls: list = []
    monkeypatch.setattr(serve, "warm_up", lambda: calls.append("warm"))
    monkeypatch.setattr("streamlit.web.cli.main", lambda: calls.append(list(sys.argv)) or 0)
    monkeypatch.setattr(sys, "argv", ["serve"])
    assert serve.main(["--server.port", "8765"]) == 0
    assert calls == ["warm", ["streamlit", "run", str(serve.SCRIPT), "--server.port", "8765"]]
    assert serve.SCRIPT.name == "streamlit_app.py" and serve.SCRIPT.is_file()


def test_a_failing_warm_up_still_starts_the_server(monkeypatch, capsys):
    def broken() -> None:
        raise OSError("no bundled models here")

    monkeypatch.setattr(serve, "warm_up", broken)
    monkeypatch.setattr("streamlit.web.cli.main", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["serve"])
    assert serve.main([]) == 0
    assert "warm-up skipped: no bundled models here" in capsys.readouterr().err


def test_the_warm_up_loads_and_traces_the_featured_model():
    serve.warm_up()  # the bundled flagship and a sample image: no exception
