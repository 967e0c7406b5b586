"""SkipNet gates (Wang et al., ECCV 2018, section 3.2): from a block's input, the chance that the block runs.

A gate bank answers ``step(index, x, state) -> (logit, state)`` for gated block ``index``, with
``p = sigmoid(logit)`` the probability of executing it. Returning the logit (not ``p``) lets the RL
stage take exact log-probabilities (``logsigmoid``). Every gate runs on every sample, because even a
skipped block's output feeds the next gate, so the recurrent state never has to be split by subset.

- ``RNNGate`` (the paper's default): per block a global average pool and a 1x1 conv to 10 dims, one
  LSTM (10 -> 10) shared by all blocks whose state carries from gate to gate, a linear to one logit.
- ``FFGateI``: max-pool 2, conv3x3, conv3x3 stride 2 (each + BN + ReLU), global pool, 1x1 conv to two
  logits; ``FFGateII``: conv3x3 stride 2 + BN + ReLU, global pool, 1x1 conv to two logits. With two
  logits, ``softmax[:, 1] = sigmoid(l1 - l0)``, so their logit is ``l1 - l0``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .conv import conv3x3
from .fused import fused_ops, runs_compiled

GATE_KINDS = ("rnn", "ff1", "ff2")
State = Any
# Gates start open (p = sigmoid(2) = 0.88): a closed block gets no gradient, and with the zero-init last BN
# of each block a block barely changes its input at first, so gates started near 0.5 (the reference init)
# can all close early and never reopen. Open gates train every branch; the RL reward then learns to skip.
OPEN_BIAS = 2.0


def lstm_step(
    x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], cell: nn.LSTMCell
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step written with ``F.linear`` (same math as ``cell(x, state)``).

    Fused RNN kernels (cuDNN, oneDNN on CPU) are invisible to ``FlopCounterMode`` and to the trace's MAC
    counter; two plain linears are counted on every device.
    """
    h, c = state
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class GateBank(nn.Module):
    """The gates of all gated blocks of one network, indexed 0..G-1 in execution order."""

    kind = ""

    def initial_state(self, x: torch.Tensor) -> State:
        return None

    def step(self, index: int, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def initial_state_one(self, x: torch.Tensor) -> State:
        """The state ``step_one`` starts from (batch 1)."""
        return self.initial_state(x)

    def step_one(self, index: int, x: torch.Tensor, state: State) -> tuple[float, State]:
        """``step`` at batch 1, its logit as a Python float (the caller decides with plain control flow)."""
        z, state = self.step(index, x, state)
        return float(z), state


class RNNGate(GateBank):
    """Recurrent gate: per-block pool + 1x1-conv embedding, one shared LSTM, a linear to one logit."""

    kind = "rnn"

    def __init__(self, channels: Sequence[int], embed_dim: int = 10, hidden_dim: int = 10) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.embed = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in channels)
        self.lstm = nn.LSTMCell(embed_dim, hidden_dim)  # = nn.LSTM(10, 10) run one step per block
        self.proj = nn.Linear(hidden_dim, 1)
        for conv in self.embed:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.proj.weight, 0.0, (2.0 / hidden_dim) ** 0.5)  # as ucbdrive/skipnet
        nn.init.constant_(self.proj.bias, OPEN_BIAS)

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = x.new_zeros(x.shape[0], self.hidden_dim)
        return zeros, zeros

    def step(self, index: int, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.fused is not None:
            return self._fused_step(index, x, state)
        e = torch.flatten(self.embed[index](F.adaptive_avg_pool2d(x, 1)), 1)
        h, c = lstm_step(e, state, self.lstm)
        return self.proj(h).squeeze(1), (h, c)

    fused: list | None = None  # the fast inference form's pre-arranged weights (``prepare_fast_form``)

    @torch.no_grad()
    def prepare_fast_form(self) -> None:
        """Pre-arrange the weights so a step is a few matrix products and one sigmoid: the 1x1 conv becomes a
        linear on the pooled vector, the LSTM's ``g`` rows are doubled so ``tanh(g) = 2 sigmoid(2g) - 1`` comes out
        of the same sigmoid as the ``i, f, o`` gates. The same multiply-adds as ``step``, fewer operators."""
        hidden = self.hidden_dim
        double = torch.ones(4 * hidden, dtype=self.proj.weight.dtype, device=self.proj.weight.device)
        double[2 * hidden : 3 * hidden] = 2.0
        w_ih = (self.lstm.weight_ih * double[:, None]).t().contiguous()
        w_hh = (self.lstm.weight_hh * double[:, None]).t().contiguous()
        bias = (self.lstm.bias_ih + self.lstm.bias_hh) * double
        self.fused = [(conv.weight.flatten(1).t().contiguous(), conv.bias.clone()) for conv in self.embed]
        self._lstm = (w_ih, w_hh, bias)
        self._proj = (self.proj.weight.t().contiguous(), self.proj.bias.clone())
        self.compiled = fused_ops() and self.proj.weight.dtype == torch.float32

    compiled = False  # batch-1 steps run the compiled kernel (``models.layers.fused``)

    def initial_state_one(self, x: torch.Tensor) -> State:
        if self.compiled and runs_compiled(x):
            return x.new_zeros(2, self.hidden_dim)  # [h; c], updated in place by the kernel
        return self.initial_state(x)

    def step_one(self, index: int, x: torch.Tensor, state: State) -> tuple[float, State]:
        if not (self.compiled and runs_compiled(x)):
            return super().step_one(index, x, state)
        w_embed, b_embed = self.fused[index]
        return torch.ops.routescope.rnn_gate_step(x, state, w_embed, b_embed, *self._lstm, *self._proj), state

    def _fused_step(self, index: int, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state
        w_embed, b_embed = self.fused[index]
        w_ih, w_hh, bias = self._lstm
        e = torch.addmm(b_embed, x.mean((2, 3)), w_embed)
        gates = torch.sigmoid(torch.addmm(torch.addmm(bias, e, w_ih), h, w_hh))
        i, f, g, o = gates.chunk(4, 1)
        c = torch.addcmul(f * c, i, g * 2 - 1)
        h = o * torch.tanh(c)
        return torch.addmm(self._proj[1], h, self._proj[0]).squeeze(1), (h, c)


class _FFGate(nn.Module):
    """Shared tail of the feed-forward gates: global pool, 1x1 conv to two logits, their difference."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels, 2, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        two = torch.flatten(self.head(F.adaptive_avg_pool2d(self.features(x), 1)), 1)
        return two[:, 1] - two[:, 0]


class FFGateI(_FFGate):
    """Max-pool 2, conv3x3, conv3x3 stride 2 (about 19% of a block's MACs in the paper)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        # ceil_mode: a 1x1 map (tiny inputs, late stages) still pools to 1x1 instead of failing
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.conv1, self.bn1 = conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = conv3x3(channels, channels, stride=2), nn.BatchNorm2d(channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.pool(x))))
        return F.relu(self.bn2(self.conv2(x)))


class FFGateII(_FFGate):
    """One conv3x3 stride 2 (about 12.5% of a block's MACs)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.conv1, self.bn1 = conv3x3(channels, channels, stride=2), nn.BatchNorm2d(channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class FeedForwardGates(GateBank):
    """One independent feed-forward gate per gated block; no state."""

    def __init__(self, channels: Sequence[int], gate: type[_FFGate], kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.gates = nn.ModuleList(gate(c) for c in channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for gate in self.gates:
            nn.init.constant_(gate.head.bias, 0.0)
            gate.head.bias.data[1] = OPEN_BIAS

    def step(self, index: int, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.gates[index](x), None


def build_gates(kind: str, channels: Sequence[int]) -> GateBank:
    """``channels[i]``: input channels of gated block ``i`` (= output channels of the block before it)."""
    if kind == "rnn":
        return RNNGate(channels)
    if kind == "ff1":
        return FeedForwardGates(channels, FFGateI, "ff1")
    if kind == "ff2":
        return FeedForwardGates(channels, FFGateII, "ff2")
    raise UsageError(f"unknown SkipNet gate {kind!r}; choose from {', '.join(GATE_KINDS)}")
