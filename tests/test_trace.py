"""The per-forward Trace: subsets attribute MACs to the right samples, and threads never see each other's trace."""
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn

from models import create_model
from models.trace import current_trace, traced_forward


class HalfSkipper(nn.Module):
    """Runs its conv only on even-indexed samples of the batch and records the decision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = torch.arange(len(x)) % 2 == 0
        trace = current_trace()
        if trace is not None:
            trace.record("conv", "skip", executed=run, probability=run.float())
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


def test_threads_keep_their_own_traces():
    model = create_model("resnet8", in_chans=1).eval()
    inputs = [torch.randn(n, 1, 28, 28) for n in (1, 2, 3, 4, 5, 6)]
    expected = [traced_forward(model, x) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: traced_forward(model, x), inputs * 2))
    for (logits, trace), (want_logits, want) in zip(results, expected * 2):
        assert torch.allclose(logits, want_logits, atol=1e-6) and torch.equal(trace.macs, want.macs)
