"""The per-forward Trace: subsets attribute MACs to the right samples, and threads never see each other's trace."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn as nn

from routescope.analysis.core.catalog import sample_images
from routescope.analysis.core.images import load_model_input
from routescope.models.checkpoint import load_checkpoint
from routescope.models.protocol import RouteScopeModel
from routescope.models.skipnet import SKIP
from routescope.models.trace import current_trace, traced_forward

from helpers import REPO

PRETRAINED = REPO / "models" / "pretrained"


class HalfSkipper(RouteScopeModel):
    """Runs its conv only on even-indexed samples of the batch and records the decision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = torch.arange(len(x)) % 2 == 0
        trace = current_trace()
        if trace is not None:
            trace.record("conv", SKIP, executed=run, probability=run.float())
        rows = run.nonzero().flatten()
        out = torch.zeros(len(x), 3, *x.shape[2:])
        if trace is not None:
            with trace.subset(rows):
                out[rows] = self.conv(x[rows])
        else:
            out[rows] = self.conv(x[rows])
        return out


def test_subset_macs_and_decisions():
    logits, trace = traced_forward(HalfSkipper(), torch.randn(5, 2, 4, 4))
    per_sample = 3 * 2 * 9 * 16
    assert trace.macs.tolist() == [per_sample, 0, per_sample, 0, per_sample]
    assert [d[0]["executed"] for d in trace.decisions] == [True, False, True, False, True]
    assert trace.decisions[1][0] == {"layer": "conv", "kind": "skip", "executed": False, "probability": 0.0}


def test_no_trace_outside_traced_forward():
    assert current_trace() is None
    HalfSkipper()(torch.randn(2, 2, 4, 4))


# per thread, its own images: batch sizes and decisions differ between the groups (SkipNet's gates, early exit's exits)
THREAD_IMAGES = [
    ["pullover-2.png"],
    ["bag-2.png", "coat-1.png"],
    ["sandal-1.png", "photo-bag.png", "dress-2.png"],
    ["trouser-1.png", "ankle-boot-2.png", "sneaker-1.png", "photo-dress.webp"],
]


def same_decisions(actual: list[list[dict]], expected: list[list[dict]]) -> bool:
    """Equal per image, layer by layer; float fields (probabilities, confidences) to 1e-5."""
    if len(actual) != len(expected):
        return False
    for got, want in zip(actual, expected):
        if len(got) != len(want) or any(g.keys() != w.keys() for g, w in zip(got, want)):
            return False
        for g, w in zip(got, want):
            for key, value in w.items():
                close = isinstance(value, float) and not isinstance(g[key], bool) and abs(g[key] - value) <= 1e-5
                if g[key] != value and not close:
                    return False
    return True


@pytest.mark.parametrize("name", ["skipnet_resnet20_fmnist_a0.75_fta6kd", "early_exit_resnet20_fmnist"])
def test_threads_keep_their_own_traces(name):
    """Threads tracing one shared model at the same time: each trace holds exactly the decisions and MACs of its own
    images, as a single-threaded run gives them."""
    model = load_checkpoint(PRETRAINED / f"{name}.pt")  # its own copy: a hook is added below
    samples = {p.name: p for p in sample_images()}
    inputs = [torch.cat([load_model_input(samples[n], model.meta).tensor for n in group]) for group in THREAD_IMAGES]
    expected = [traced_forward(model, x) for x in inputs]
    for i, (_, a) in enumerate(expected):  # else a trace given another thread's decisions could still pass
        for _, b in expected[i + 1 :]:
            assert not same_decisions(a.decisions, b.decisions)
    assert len({tuple(t.macs.tolist()) for _, t in expected}) == len(expected)
    # every thread waits, inside its traced forward, until all have started theirs: the traces are live together
    barrier = threading.Barrier(len(inputs), timeout=60)

    def wait_for_all(module, args) -> None:
        barrier.wait()

    hook = model.register_forward_pre_hook(wait_for_all)
    try:
        for _ in range(2):
            with ThreadPoolExecutor(len(inputs)) as pool:
                results = list(pool.map(lambda x: traced_forward(model, x), inputs))
            for group, (logits, trace), (want_logits, want) in zip(THREAD_IMAGES, results, expected):
                assert same_decisions(trace.decisions, want.decisions), f"{group}: another thread's decisions"
                assert torch.equal(trace.macs, want.macs), (
                    f"{group}: MACs {trace.macs.tolist()} != {want.macs.tolist()}"
                )
                assert torch.allclose(logits, want_logits, atol=1e-5), group
    finally:
        hook.remove()
