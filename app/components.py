"""Reusable pieces of the pages: image picking, one image's report, decision views, attribution view,
interventions (every decision's control, drawn from its kind's ``Control``) and perturbation sweeps."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from typing import Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image
from plotly.subplots import make_subplots

from routescope.analysis.core.catalog import sample_images
from routescope.analysis.core.charts import top_classes
from routescope.analysis.core.images import MAX_BYTES as IMAGE_MAX_BYTES, MAX_PIXELS as IMAGE_MAX_PIXELS, ImageError
from routescope.analysis.core.interventions import changed_decisions, format_interventions, parse_interventions
from routescope.analysis.core.kinds import (
    Control,
    Section,
    Widget,
    attribution_targets,
    decision_controls,
    grouped,
    inspect_charts,
    kind_view,
)
from routescope.analysis.core.latency import Latency
from routescope.analysis.core.perturb import PERTURBATIONS, perturbation_figure
from routescope.analysis.core.trace import model_structure
from routescope.app.formatting import cost_delta, latency_delta, macs, ms, percent, show_table
from routescope.app.resources import attribution as cached_attribution, intervened_image, latency as cached_latency
from routescope.app.resources import perturbation as cached_perturbation, traced_image
from routescope.app.resources import original_picture
from routescope.analysis.core.familiarity import Reference, familiarity
from routescope.models.decisions import decision_kind
from routescope.models.trace import check_interventions

IMAGE_HELP = (
    f"PNG, JPEG, WebP, GIF, BMP or TIFF, up to {IMAGE_MAX_BYTES // 2**20} MB and {IMAGE_MAX_PIXELS // 10**6} "
    "megapixels; the models see small inputs (28x28 for Fashion-MNIST), so a resized copy gives the same result"
)


def image_refusal(name: str, data: bytes) -> str | None:
    """Why an uploaded image is refused before it is decoded (file size, pixel count: the limits of
    ``analysis.core.images``), as one sentence that says what to do; None if it may be decoded."""
    if len(data) > IMAGE_MAX_BYTES:
        return (
            f"{name}: {len(data) / 2**20:.0f} MB is over the {IMAGE_MAX_BYTES // 2**20} MB limit for images; upload a "
            "smaller copy (a resized JPEG or a screenshot: the models see 28x28 pixels, so the result is the same)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                size = f"{img.width}x{img.height} pixels is" if img.width * img.height > IMAGE_MAX_PIXELS else None
    except Image.DecompressionBombError:
        size = "its pixel count is"
    except Exception:  # not an image, or a broken one: decoding says which (``image_report``)
        return None
    if size is None:
        return None
    return (
        f"{name}: {size} over the {IMAGE_MAX_PIXELS // 10**6}-megapixel limit for images; upload a resized copy "
        "(the models see 28x28 pixels, so the result is the same)."
    )


def pick_images(
    key: str, default_samples: int = 1, multiple: bool = True, extra: dict[str, Callable[[], bytes]] | None = None
) -> list[tuple[str, bytes]]:
    """Sample images and uploads, as ``(name, bytes)``; decoding happens later, per model. An upload over the
    size limits is refused here, under the uploader, with what to do. ``extra``: more samples (a few images of each
    class of the chosen test set), by name, read only when picked.

    The uploader has no ``type`` filter and a wide size limit (``server.maxUploadSize``): the browser would refuse
    other files without a readable reason; the app says why instead."""
    samples: dict[str, Callable[[], bytes]] = {p.name: p.read_bytes for p in sample_images()}
    samples.update(extra or {})
    bundled = len(samples) - len(extra or {})
    help_text = None if not extra else f"The bundled sample photos, then {len(extra)} images of the test set."
    left, right = st.columns(2)
    if multiple:
        restored = st.session_state.pop(f"{key}-samples-restored", False)  # a shared link set the picks already
        kept = st.session_state.get(f"{key}-samples")
        if kept is not None and any(name not in samples for name in kept):  # another test set's images
            st.session_state[f"{key}-samples"] = [name for name in kept if name in samples]
        picked = left.multiselect(
            "Sample images",
            list(samples),
            default=None if restored else list(samples)[: min(default_samples, bundled)],
            key=f"{key}-samples",
            help=help_text,
        )
        uploads = (
            right.file_uploader("…or upload images", accept_multiple_files=True, key=f"{key}-upload", help=IMAGE_HELP)
            or []
        )
    else:
        if st.session_state.get(f"{key}-samples") not in (None, "(none)", *samples):
            del st.session_state[f"{key}-samples"]  # another test set's image
        choice = left.selectbox("Sample image", ["(none)", *samples], index=1, key=f"{key}-samples", help=help_text)
        picked = [] if choice == "(none)" else [choice]
        upload = right.file_uploader("…or upload an image", key=f"{key}-upload", help=IMAGE_HELP)
        uploads = [upload] if upload is not None else []
        if uploads:
            picked = []
    accepted, seen = [], {}
    for upload in uploads:
        data = upload.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:  # the same file twice (or under two names): one card
            right.caption(f"`{upload.name}` is the same file as `{seen[digest]}`: shown once.")
            continue
        seen[digest] = upload.name
        refusal = image_refusal(upload.name, data)
        if refusal:
            right.error(refusal)
        else:
            accepted.append((upload.name, data))
    st.session_state[f"{key}-n-samples"] = len(picked)  # the inputs after these are uploads (``uploaded``)
    return [(name, samples[name]()) for name in picked] + accepted


def uploaded(key: str, inputs: list) -> list[bool]:
    """Which of ``pick_images(key)``'s inputs are uploads (a file may be named like a sample)."""
    n = st.session_state.get(f"{key}-n-samples", len(inputs))
    return [i >= n for i in range(len(inputs))]


def show_decisions(decisions: list[dict], key: str, model: torch.nn.Module | None = None) -> None:
    """Every chart the decisions' kinds offer, in the order the network takes them."""
    for i, (kind, figure) in enumerate(inspect_charts(decisions, model)):
        st.plotly_chart(figure, key=f"{key}-{kind}-{i}")


def show_section(section: Section, key: str, title: bool = True) -> None:
    """A ``Section`` a kind's view offers: its title, figure, table and caption."""
    if title:
        st.subheader(section.title)
    if section.figure is not None:
        st.plotly_chart(section.figure, key=key)
    if section.table is not None:
        show_table(section.table, most=8)
    if section.caption:
        st.caption(section.caption)


@st.cache_data(show_spinner=False, max_entries=64)
def structure_titles(_model: torch.nn.Module, model_key: str) -> list[str]:
    """The titles of the model's learned per-model structures (DGConv groups, RePr filter ranking), once per model."""
    views = [kind_view(kind) for kind in grouped(model_structure(_model))]
    return [view.title for view in views if view is not None]


def page_link(page: str, label: str, query: dict | None = None, help: str | None = None) -> None:
    """A link to another page of the app (``page``: its file under app/views), keeping the session; a plain link
    where the page is not part of the navigation (a page script run on its own)."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(f"views/{page}.py", label=label, icon=":material/arrow_forward:", query_params=query, help=help)
    except (StreamlitAPIException, KeyError):
        params = "&".join(f"{k}={v}" for k, v in (query or {}).items())
        st.markdown(f"[{label}]({page}{'?' + params if params else ''})")


def image_report(
    model: torch.nn.Module,
    name: str,
    data: bytes,
    key: str,
    compact: bool = False,
    upload: bool = False,
    reference: Reference | None = None,
) -> dict | None:
    """The tensor the model saw, prediction, cost and every decision for one image; returns the trace.

    An unusable file is an error message and None; content the model cannot see (frames, alpha, bit depth,
    colour space) is a warning; routine fitting steps are captions. An ``upload`` is shown as uploaded beside the
    input the model saw, and flagged (a warning that says why) when it is unlike the ``reference`` test images
    (``analysis.core.familiarity``).
    """
    try:
        model_input, trace = traced_image(model, model.cache_key, name, data)
    except ImageError as e:
        st.error(str(e))
        return None
    if model_input.warnings:
        st.warning(f"{name}: " + "; ".join(model_input.warnings))
    original = original_picture(data) if upload else None
    prediction = trace["prediction"]
    if original is not None and reference is not None:
        flag = familiarity(model_input.pixels, original[2], prediction["probability"], reference)
        if flag.flagged:
            st.warning(f"{name} is unlike the images the model was trained on: {flag.reason}.", icon="⚠️")
    if original is not None and not compact:
        seen, result = st.columns([2, 3])
        left, right = seen.columns(2)
        width, height = original[1]
        left.image(original[0], caption=f"{name}: as uploaded ({width}x{height})", width=140)
        seen = right
    else:
        seen, result = st.columns([1, 3]) if not compact else (st.container(), st.container())
    size = "x".join(str(n) for n in model_input.pixels.shape[:2])
    seen.image(model_input.pixels, caption=f"{name}: the exact input the model saw ({size})", width=140, clamp=True)
    for note in model_input.notes:
        if note not in model_input.warnings:
            seen.caption(note)
    cost = trace["cost"]
    a, b, *decided = result.columns(3 if "macs_decided" in cost else 2)
    a.metric(
        "Prediction",
        prediction["label"],
        f"{percent(prediction['probability'])} confidence",
        delta_color="off",
        delta_arrow="off",
    )
    delta, colour = cost_delta(cost["macs"], cost["macs_full"])
    b.metric(
        "MACs executed",
        macs(cost["macs"], 2),
        delta,
        delta_color=colour,
        delta_arrow="off" if colour == "off" else "auto",
        help=f"{percent(cost['macs'] / cost['macs_full'], 0)} of the dense network's {macs(cost['macs_full'], 2)} "
        "multiply-accumulates: what this image really executed (fewer is cheaper, so a cut shows green).",
    )
    if decided:  # a plug-in model: what its decisions say should have run, beside what it computed (masking)
        delta, colour = cost_delta(cost["macs_decided"], cost["macs_full"])
        decided[0].metric(
            "MACs decided",
            macs(cost["macs_decided"], 2),
            delta,
            delta_color=colour,
            delta_arrow="off" if colour == "off" else "auto",
            help="What the decisions say should have run; a model that computes a gated-off block and masks it "
            "executes more than it decides.",
        )
    with result:
        st.plotly_chart(top_classes(trace), key=f"{key}-top")
        if trace["decisions"]:
            show_decisions(trace["decisions"], key, model)
        else:
            structures = structure_titles(model, model.cache_key)
            if structures:
                learned = " and ".join(title[0].lower() + title[1:] for title in structures)
                st.caption(
                    f"No per-image decisions: every layer runs for every image. This model's {learned} is fixed "
                    "at inference, the same for every image: the Structure page shows it."
                )
                page_link("structure", "See its structure on the Structure page")
            else:
                st.caption("A static network: every layer runs for every image, so there are no routing decisions.")
    return {**trace, "tensor": model_input.tensor, "pixels": model_input.pixels}


def explain(model: torch.nn.Module, trace: dict, key: str) -> None:
    """captum attributions of the prediction or of one decision value, with IG's convergence delta (cached per
    model, image and target in ``app.resources.attribution``)."""
    decisions = [d for d in trace["decisions"] if attribution_targets(d)]
    choices = ["prediction"] + [f"{d['kind']}: {d['layer']}" for d in decisions]
    _apply_explain_link(key, choices)
    if st.session_state.get(f"{key}-target") not in (None, *choices):
        del st.session_state[f"{key}-target"]  # another image's or model's decision
    choice = st.selectbox("Explain", choices, key=f"{key}-target")
    if choice == "prediction":
        method = st.radio("Method", list(METHODS), horizontal=True, key=f"{key}-method")
        target = ("prediction", trace["prediction"]["index"], METHODS[method])
    else:
        decision = decisions[choices.index(choice) - 1]
        options = attribution_targets(decision)
        picked = options[0]
        wanted = st.session_state.pop(f"{key}-explain-value", None)
        if wanted is not None:
            labels = [t.label for t in options]
            if wanted in labels:
                st.session_state[f"{key}-option"] = options[labels.index(wanted)]
            else:
                st.warning(f"The link asks for value `{wanted}`; this decision offers {', '.join(labels)}.")
        if st.session_state.get(f"{key}-option") not in (None, *options):
            del st.session_state[f"{key}-option"]
        if len(options) > 1:
            picked = st.selectbox("Value", options, format_func=lambda t: t.label, key=f"{key}-option")
        target = ("decision", decision["layer"], picked)
    attribution = cached_attribution(model, model.cache_key, trace["tensor"].numpy(), target)
    st.plotly_chart(attribution_figure(attribution, trace.get("pixels")), key=f"{key}-attribution")
    st.caption(
        "Red pixels push the explained value up, blue ones down; left, the map over the input (grey), right, alone."
    )
    relative = attribution.relative_delta
    if relative is not None:
        explained = abs(attribution.output_change)
        note = (
            f"Convergence delta {attribution.delta:.2g} against an output change of {explained:.2g} ({relative:.0%}): "
            "how far the attributions fall short of adding up to what they explain (the change of the explained "
            "value from the baseline, the mean image, to this image)."
        )
        if relative > IG_DELTA_WARN:
            st.warning(
                f"Read this map with care: its attributions miss {relative:.0%} of the output change they should add "
                "up to (Integrated Gradients' convergence delta is large). A decision that flips along the path from "
                "the baseline, as a skipped block does, makes the integral jump."
            )
        st.caption(note)


IG_DELTA_WARN = 0.05  # a convergence delta over 5% of the explained change is worth a warning


def attribution_figure(attribution, pixels: np.ndarray | None) -> go.Figure:
    """The attribution over the input picture (grey, the map on top with its near-zero values transparent) and
    alone, on one symmetric colour scale."""
    heat = np.asarray(attribution.heatmap)
    limit = float(abs(heat).max()) or 1.0
    over = pixels is not None and np.asarray(pixels).shape[:2] == heat.shape
    figure = make_subplots(
        rows=1,
        cols=2 if over else 1,
        subplot_titles=("over the input", "alone") if over else None,
        horizontal_spacing=0.04,
    )
    scale = dict(zmin=-limit, zmax=limit, coloraxis="coloraxis", hovertemplate="(%{x}, %{y}): %{z:.3g}<extra></extra>")
    if over:
        grey = np.asarray(pixels, dtype=float)
        grey = grey.mean(axis=2) if grey.ndim == 3 else grey
        figure.add_trace(
            go.Heatmap(z=grey, colorscale=GREY, showscale=False, hoverinfo="skip", zmin=0, zmax=255), row=1, col=1
        )
        figure.add_trace(go.Heatmap(z=heat, **scale, opacity=0.75), row=1, col=1)
    figure.add_trace(go.Heatmap(z=heat, **scale), row=1, col=2 if over else 1)
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False, showgrid=False)
    figure.update_xaxes(constrain="domain", showticklabels=False, showgrid=False)
    if over:
        figure.update_yaxes(scaleanchor="x2", row=1, col=2)
    return figure.update_layout(
        title=f"{attribution.method}: {attribution.target}",
        coloraxis=dict(colorscale=OVERLAY_SCALE, cmin=-limit, cmax=limit, colorbar=dict(title="relevance")),
        height=340,
        margin=dict(l=10, r=10, t=60, b=10),
    )


GREY = [[0, "#3a3a3a"], [1, "#f2f2f2"]]  # the input, lifted off black so the colours over it stay readable
# diverging, transparent around 0: the picture shows through where a pixel does not matter
OVERLAY_SCALE = [
    [0.0, "rgba(33,102,172,1)"],
    [0.35, "rgba(146,197,222,0.6)"],
    [0.5, "rgba(255,255,255,0)"],
    [0.65, "rgba(244,165,130,0.6)"],
    [1.0, "rgba(178,24,43,1)"],
]


def intervention_state(key: str) -> tuple[dict, dict]:
    """This image's overrides ``{layer: {field: value}}`` and knob values, kept in the session (created empty)."""
    return st.session_state.setdefault(f"{key}-overrides", {}), st.session_state.setdefault(f"{key}-knobs", {})


def _reset(key: str, knob_names: list[str]) -> None:
    st.session_state[f"{key}-overrides"], st.session_state[f"{key}-knobs"] = {}, {}
    for name in knob_names:
        st.session_state.pop(f"{key}-knob-{name}", None)


def _force(key: str, control: Control, widget_key: str) -> None:
    """Widget callback: the chosen value becomes an override (None from ``control.override``: decide freely)."""
    overrides, _ = intervention_state(key)
    forced = control.override(st.session_state[widget_key])
    if forced is None:
        overrides.get(control.layer, {}).pop(control.field, None)
        if not overrides.get(control.layer):
            overrides.pop(control.layer, None)
    else:
        overrides.setdefault(control.layer, {})[control.field] = forced


def _move_knob(key: str, name: str, default: float) -> None:
    _, knobs = intervention_state(key)
    value = float(st.session_state[f"{key}-knob-{name}"])
    if value == default:
        knobs.pop(name, None)
    else:
        knobs[name] = value


_DRAW: dict[Widget, Callable] = {
    Widget.TOGGLE: lambda box, c, common: box.toggle(c.label, **common),
    Widget.SELECT: lambda box, c, common: box.selectbox(c.label, c.options, format_func=c.format, **common),
    Widget.SLIDER: lambda box, c, common: box.slider(c.label, float(c.low), float(c.high), **common),
}


def control_widget(control: Control, key: str, container) -> None:
    """One decision's control, showing what the run on screen decided (its state is set before it is drawn)."""
    widget_key = f"{key}-ctl-{control.layer}-{control.field}"
    st.session_state[widget_key] = control.value
    common = dict(
        key=widget_key,
        on_change=_force,
        args=(key, control, widget_key),
        help=control.help or None,
        disabled=control.disabled,
    )
    _DRAW[control.widget](container, control, common)


def _run_card(column, title: str, trace: dict, latencies: tuple[Latency, Latency], key: str) -> None:
    """One run's prediction, MACs and latency; ``latencies``: (this run, the dense counterpart) timed alternately.
    Cost deltas are coloured the inverse way (fewer MACs, less time: green); a latency whose interquartile range
    overlaps the dense one's is "no measurable difference", whatever its median says."""
    latency, dense = latencies
    prediction, cost = trace["prediction"], trace["cost"]
    column.markdown(f"**{title}**")
    column.metric(
        f"Prediction ({title.lower()})",
        prediction["label"],
        f"{percent(prediction['probability'])} confidence",
        delta_color="off",
        delta_arrow="off",
    )
    delta, colour = cost_delta(cost["macs"], cost["macs_full"])
    column.metric(
        f"MACs ({title.lower()})",
        macs(cost["macs"], 2),
        delta,
        delta_color=colour,
        delta_arrow="off" if colour == "off" else "auto",
        help=f"{percent(cost['macs'] / cost['macs_full'], 0)} of the dense network's MACs",
    )
    delta, colour = latency_delta(latency, dense)
    column.metric(
        f"Latency ({title.lower()})",
        ms(latency.median_ms),
        delta,
        delta_color=colour,
        delta_arrow="off" if colour == "off" else "auto",
        help=f"Batch 1 on this server, median of {latency.runs} runs after a warm-up, timed alternately with the "
        f"dense counterpart ({dense}) in the same run, so the machine's noise falls on both. A difference counts "
        "only when the two interquartile ranges do not overlap.",
    )
    column.caption(
        f"Interquartile range {latency.q1_ms:.2f}–{ms(latency.q3_ms)}; the dense network's "
        f"{dense.q1_ms:.2f}–{ms(dense.q3_ms)}."
    )
    column.plotly_chart(top_classes(trace), key=f"{key}-top")


def intervention_panel(model: torch.nn.Module, name: str, data: bytes, original: dict, key: str) -> dict | None:
    """Change any decision in place and move any knob; the original and intervened runs side by side (prediction,
    top classes, MACs, measured latency against the dense counterpart) and the decisions that differ. Returns the
    intervened trace (None if the intervention was refused)."""
    overrides, knobs = intervention_state(key)
    declared = model.knobs()
    for knob, spec in declared.items():  # sliders first: a knob changes which decisions the controls show
        slider_key = f"{key}-knob-{knob}"
        st.session_state.setdefault(slider_key, float(knobs.get(knob, spec["default"])))
        st.slider(
            f"knob: {knob}",
            float(spec["low"]),
            float(spec["high"]),
            step=0.01,
            key=slider_key,
            help=spec["help"],
            on_change=_move_knob,
            args=(key, knob, float(spec["default"])),
        )
    try:
        intervened = intervened_image(
            model, model.cache_key, name, data, json.dumps(overrides, sort_keys=True), json.dumps(knobs, sort_keys=True)
        )
    except ValueError as e:
        st.error(f"This intervention cannot run: {e}")
        st.button("Reset", key=f"{key}-reset", on_click=_reset, args=(key, list(declared)))
        return None
    controls = decision_controls(intervened["decisions"], model)
    if controls:
        st.caption(
            "Each control shows what the intervened run decided; change one to force it (later decisions respond)."
        )
        columns = st.columns(4)
        for i, control in enumerate(controls):
            control_widget(control, key, columns[i % 4])
    elif not declared:
        st.caption("This model decides nothing per image and has no knobs: there is nothing to intervene on.")
    st.button(
        "Reset",
        key=f"{key}-reset",
        on_click=_reset,
        args=(key, list(declared)),
        help="forget every forced decision and knob move of this image",
    )
    as_json = json.dumps(overrides, sort_keys=True), json.dumps(knobs, sort_keys=True)
    left, right = st.columns(2)
    _run_card(left, "Original", original, cached_latency(model, model.cache_key, name, data, "{}", "{}"), f"{key}-orig")
    _run_card(
        right, "Intervened", intervened, cached_latency(model, model.cache_key, name, data, *as_json), f"{key}-intv"
    )
    st.caption(
        f"Dense counterpart: every layer at full width, {macs(original['cost']['macs_full'], 2)} MACs; each "
        "latency above is timed alternately with it in one run (ABBA order), the timing path of `tools.bench`; "
        "a batch-1 difference of a few tenths of a millisecond is often inside the run's noise."
    )
    fields = {
        kind: decision_kind(kind).forcible
        for kind in {d["kind"] for d in original["decisions"] + intervened["decisions"]}
    }
    changed = changed_decisions(original["decisions"], intervened["decisions"], fields)
    if changed.empty:
        st.caption("No decision differs from the original run.")
    else:
        st.markdown(
            f"**Decisions that differ** ({int(changed['forced'].sum())} forced, "
            f"{int((~changed['forced']).sum())} changed in response)"
        )
        show_table(changed, key=f"{key}-changed")
    return intervened


def perturbation_view(model: torch.nn.Module, pixels, key: str) -> None:
    """Sweep one transformation of the picture the model saw and plot decisions, probability and MACs vs strength."""
    left, middle, right = st.columns([2, 3, 1])
    name = left.selectbox(
        "Transformation", list(PERTURBATIONS), format_func=lambda n: PERTURBATIONS[n].label, key=f"{key}-ptype"
    )
    spec = PERTURBATIONS[name]
    # defaults through the session, not the widgets: a shared link may have set them (``restore_perturb_and_explain``)
    st.session_state.setdefault(f"{key}-prange-{name}", (float(spec.low), float(spec.high)))
    st.session_state.setdefault(f"{key}-psteps", 11)
    low, high = middle.slider(
        "Strength range", float(spec.low), float(spec.high), key=f"{key}-prange-{name}", help=spec.unit
    )
    steps = right.number_input("Steps", 3, 21, key=f"{key}-psteps")
    strengths = tuple(round(float(v), 4) for v in np.linspace(low, high, int(steps)))
    frame, pictures = cached_perturbation(model, model.cache_key, pixels, name, strengths)
    st.plotly_chart(perturbation_figure(frame), key=f"{key}-perturbation")
    st.image(list(pictures), caption=[f"{s:g}" for s in strengths], width=56, clamp=True)


def restore_view(model: torch.nn.Module, key: str = "img0") -> None:
    """On a session's first run: a shared link's ``image``, ``override`` and ``knob`` query parameters become the
    Inspect page's state (first image). A name or value the model does not know is a message, not a crash.
    Later runs leave the state alone (the URL then only mirrors it, ``share_view``)."""
    if "url-restored" in st.session_state:
        return
    st.session_state["url-restored"] = True
    restore_perturb_and_explain(key)
    if not any(k in st.query_params for k in ("image", "override", "knob")):
        return
    image = st.query_params.get("image")
    if image is not None:
        if image in {p.name for p in sample_images()}:
            st.session_state["inspect-samples"], st.session_state["inspect-samples-restored"] = [image], True
        else:
            st.warning(f"The link names image `{image}`, which is not a sample image here.")
    try:
        overrides, knobs = parse_interventions(st.query_params.get_all("override"), st.query_params.get_all("knob"))
        check_interventions(model, overrides, knobs)
    except ValueError as e:
        st.error(f"The link's intervention was not applied: {e}")
        return
    if overrides or knobs:
        st.session_state[f"{key}-overrides"], st.session_state[f"{key}-knobs"] = overrides, knobs
        for name, value in knobs.items():
            st.session_state[f"{key}-knob-{name}"] = value
        st.session_state[f"{key}-intervene"] = True


def restore_perturb_and_explain(key: str = "img0") -> None:
    """A shared link's Perturb (``perturb=KIND``, ``strength=LOW,HIGH``, ``steps=N``) and Explain (``explain=TARGET``:
    ``prediction`` or ``KIND: LAYER``, ``method=integrated_gradients|gradcam``, ``value=LABEL``) become the first
    image's widgets' state; a kind or range the app does not know is a message. The Explain target is checked
    against the image's decisions when ``explain`` draws it."""
    params = st.query_params
    kind = params.get("perturb")
    if kind is not None:
        if kind not in PERTURBATIONS:
            st.warning(f"The link names perturbation `{kind}`; the app knows {', '.join(PERTURBATIONS)}.")
        else:
            spec = PERTURBATIONS[kind]
            st.session_state[f"{key}-perturb"], st.session_state[f"{key}-ptype"] = True, kind
            strength = params.get("strength")
            if strength is not None:
                try:
                    low, high = sorted(float(v) for v in strength.split(","))
                    if not spec.low <= low <= high <= spec.high:
                        raise ValueError
                    st.session_state[f"{key}-prange-{kind}"] = (low, high)
                except ValueError:
                    st.warning(f"The link's strength `{strength}` is not LOW,HIGH within {spec.low:g}..{spec.high:g}.")
            steps = params.get("steps")
            if steps is not None:
                if steps.isdigit() and 3 <= int(steps) <= 21:
                    st.session_state[f"{key}-psteps"] = int(steps)
                else:
                    st.warning(f"The link's steps `{steps}` is not a whole number from 3 to 21.")
    target = params.get("explain")
    if target is not None:
        st.session_state[f"{key}-explain"] = True
        st.session_state[f"{key}-explain-link"] = (target, params.get("method"), params.get("value"))


METHODS = {"Integrated Gradients": "integrated_gradients", "GradCAM": "gradcam"}  # Explain's radio -> URL


def _apply_explain_link(key: str, choices: list[str]) -> None:
    """The Explain target a link asked for (``restore_perturb_and_explain``), once it can be checked."""
    link = st.session_state.pop(f"{key}-explain-link", None)
    if link is None:
        return
    target, method, _ = link
    if target not in choices:
        st.warning(f"The link asks to explain `{target}`; this image offers {', '.join(choices)}.")
        return
    st.session_state[f"{key}-target"] = target
    if method is not None:
        labels = {v: k for k, v in METHODS.items()}
        if method in labels:
            st.session_state[f"{key}-method"] = labels[method]
        else:
            st.warning(f"The link names attribution method `{method}`; the app knows {', '.join(labels)}.")
    st.session_state[f"{key}-explain-value"] = link[2]


def _explain_params(key: str) -> dict:
    """The first image's Perturb and Explain state as query parameters (only what is open and not the default)."""
    state, out = st.session_state, {}
    if state.get(f"{key}-perturb"):
        kind = state.get(f"{key}-ptype", next(iter(PERTURBATIONS)))
        spec = PERTURBATIONS[kind]
        out["perturb"] = kind
        low, high = state.get(f"{key}-prange-{kind}", (spec.low, spec.high))
        if (low, high) != (spec.low, spec.high):
            out["strength"] = f"{low:g},{high:g}"
        if state.get(f"{key}-psteps", 11) != 11:
            out["steps"] = str(state[f"{key}-psteps"])
    if state.get(f"{key}-explain"):
        target = state.get(f"{key}-target", "prediction")
        out["explain"] = target
        if target == "prediction":
            method = METHODS.get(state.get(f"{key}-method", "Integrated Gradients"))
            if method != "integrated_gradients":
                out["method"] = method
        elif state.get(f"{key}-option") is not None:
            out["value"] = getattr(state[f"{key}-option"], "label", None)
    return {k: v for k, v in out.items() if v}


def share_view(model_name: str | None, image: str | None, key: str = "img0", index: int | None = None) -> None:
    """Write the page's state to the URL (model, test set, first sample image or ``index`` of the test set, its
    overrides and knobs, its Perturb and Explain settings), so it can be shared."""
    overrides, knobs = intervention_state(key)
    forced, moved = format_interventions(overrides, knobs) if st.session_state.get(f"{key}-intervene") else ([], [])
    params = {
        "model": model_name,
        "testset": st.query_params.get("testset"),
        "image": image,
        "index": None if index is None else str(index),
        "override": forced,
        "knob": moved,
        **_explain_params(key),
    }
    st.query_params.from_dict({k: v for k, v in params.items() if v})


def forget_interventions_of_another_model(model: torch.nn.Module) -> None:
    """Overrides name one model's layers and knobs: when the page's model changes, every image starts unforced."""
    previous = st.session_state.get("interventions-model")
    st.session_state["interventions-model"] = model.cache_key
    if previous is not None and previous != model.cache_key:
        for name in [
            k for k in st.session_state if k.startswith("img") and ("-overrides" in k or "-knobs" in k or "-knob-" in k)
        ]:
            del st.session_state[name]
