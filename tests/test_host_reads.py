"""The batched path of every flagship reads device values on the host at most once per decision point (issue "Speed
on every device": on a GPU each read waits for the queue), computes what the traced batch computes, and the helpers
that count and synchronise behave."""

import pytest
import torch

from routescope.analysis.core.catalog import bundled_checkpoints, featured
from routescope.analysis.core.table import load_test_images
from routescope.models import load_checkpoint
from routescope.models.data import normalize
from routescope.models.host_sync import HostReads, synchronize
from routescope.models.trace import traced_forward

from helpers import routing_decisions

FLAGSHIPS = [entry["flagship"] for entry in featured().values()]
# Decisions that change which rows run need their group sizes on the host, one read per decision point; the others
# (CondConv's mixtures, DGConv's and RePr's fixed structures) need none.
READS_PER_DECISION = {"skipnet": 1, "dsnet": 1, "early_exit": 1, "condconv": 0, "dgconv": 0, "repr": 0}


@pytest.fixture(scope="module")
def images():
    return load_test_images()[0][:256]


@pytest.mark.parametrize("name", FLAGSHIPS)
def test_batched_path_reads_the_host_at_most_once_per_decision(name, images):
    model = load_checkpoint(bundled_checkpoints()[name])
    x = normalize(images, model.meta["mean"], model.meta["std"])
    with torch.inference_mode():
        model(x)  # DGConv times its plans on first sight of a shape: not the hot loop
        with HostReads() as reads:
            logits = model(x)
    traced, trace = traced_forward(model, x)
    patterns = {repr(row) for row in routing_decisions(trace)}
    method = model.meta["method"]
    budget = READS_PER_DECISION[method] * len(model.decision_layers())
    assert reads.total <= budget, f"{name}: {dict(reads.calls)} (budget {budget})"
    if READS_PER_DECISION[method]:
        assert len(patterns) > 1, "the images must route differently, or the grouping is not exercised"
    torch.testing.assert_close(logits, traced, atol=1e-4, rtol=1e-5)


def test_dsnet_groups_are_read_once_per_gate_whatever_the_mix(images):
    """Forcing every image to one width and letting the gates mix widths cost the same reads: one per gate."""
    name = next(n for n in FLAGSHIPS if n.startswith("dsnet"))
    model = load_checkpoint(bundled_checkpoints()[name])
    x = normalize(images[:64], model.meta["mean"], model.meta["std"])
    with torch.inference_mode(), HostReads() as reads:
        out = model(x, return_gates=True)
    assert len({tuple(c) for c in out.choices.tolist()}) > 2
    assert reads.calls == {"tolist": len(model.gate_names)}


def test_host_reads_counts_what_waits_for_a_device():
    x = torch.arange(6.0)
    with HostReads() as reads:
        x.sum().item()
        bool((x > 2).any())
        x[x > 2]
        (x > 2).nonzero()
        x.tolist()
        y = x.index_select(0, torch.tensor([1, 2])) * 2  # stays on the device: not counted
        torch.sort(y, stable=True)
    assert reads.calls == {"item": 1, "__bool__": 1, "__getitem__ with a mask": 1, "nonzero": 1, "tolist": 1}
    assert reads.total == 5


def test_synchronize_accepts_every_device_spelling():
    for device in (None, "cpu", torch.device("cpu"), torch.device("meta")):
        synchronize(device)
