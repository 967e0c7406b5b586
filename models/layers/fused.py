"""Compiled batch-1 kernels for the small per-image decisions (SkipNet's gate step, early exit's heads, CondConv's
routing).

At batch 1 a SkipNet gate step is about a dozen tiny PyTorch operators (pool, four matrix products, the LSTM's
element-wise arithmetic, a sigmoid) whose dispatch costs more than their arithmetic: on the CIFAR ResNets a gate
cost about as much as the block it could skip. ``rnn_gate_step`` computes the whole step in one C++ function,
one operator call (``torch.ops.routescope.rnn_gate_step``): the pooled input, the 1x1 embedding, one LSTM step
and the logit, with the recurrent state updated in place. ``exit_head`` is an SDN exit head (the max/avg pooling
mix, the linear layer) and its confidence (max softmax) in one call; ``condconv_mix`` a CondConv block's router and
both of its mixed kernels.

It is built once with ``torch.utils.cpp_extension.load_inline`` where a C++ compiler is present, by ``make install``
(``main``), into the Python environment itself (``build_directory``: ``.venv/torch_extensions``, or
``$TORCH_EXTENSIONS_DIR`` where that is set): it lives as long as the install, and clearing the per-user caches
(``~/.cache``) does not put a 20-second compile in front of the app's first prediction. It is used by the fast
inference form only, on CPU float32 tensors only (``runs_compiled``: every other device takes the PyTorch path);
without a compiler, or with ``ROUTESCOPE_FUSED=0``, the Python step runs instead (same result within float32
rounding). Its multiply-adds are registered with ``torch.utils.flop_counter``, so ``FlopCounterMode`` and the
trace's MAC counter count it exactly as the operators it replaces.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import register_flop_formula

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <cmath>
#include <vector>

// The mean of n floats, summed in 8 independent lanes so the loop vectorizes (a single running sum is a
// dependency chain: 14 us for a 16 x 32 x 32 map instead of 3).
static float plane_mean(const float* row, int64_t n) {
  float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += row[k + l];
  float s = 0.f;
  for (; k < n; ++k) s += row[k];
  for (int l = 0; l < 8; ++l) s += lanes[l];
  return s / static_cast<float>(n);
}

// The per-channel means of a (1, C, H, W) map as it lies, NCHW or channels-last (the fast form's layout, see
// models.memory_format), without copying it.
static std::vector<float> channel_means(const at::Tensor& x) {
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  std::vector<float> means(C, 0.f);
  if (x.is_contiguous()) {
    const float* p = x.data_ptr<float>();
    for (int64_t ch = 0; ch < C; ++ch) means[ch] = plane_mean(p + ch * HW, HW);
  } else if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    const float* p = x.data_ptr<float>();
    for (int64_t k = 0; k < HW; ++k)
      for (int64_t ch = 0; ch < C; ++ch) means[ch] += p[k * C + ch];
    for (auto& v : means) v /= static_cast<float>(HW);
  } else {
    return channel_means(x.contiguous());
  }
  return means;
}

// One SkipNet RNN-gate step at batch 1 (the fast form's pre-arranged weights, see RNNGate.prepare_inference):
// e = mean_hw(x) @ w_embed + b_embed; a = sigmoid(bias + e @ w_ih + h @ w_hh) (the g rows doubled, so
// tanh(g) = 2 a_g - 1); c = f c + i (2 a_g - 1); h = o tanh(c); returns h @ w_proj + b_proj. hc = [h; c], in place.
double rnn_gate_step(const at::Tensor& x, at::Tensor hc, const at::Tensor& w_embed, const at::Tensor& b_embed,
                     const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& bias,
                     const at::Tensor& w_proj, const at::Tensor& b_proj) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "rnn_gate_step: x must be float (1, C, H, W)");
  const int64_t C = x.size(1), E = w_embed.size(1), H = w_hh.size(0);
  TORCH_CHECK(w_embed.size(0) == C && w_ih.size(0) == E && w_ih.size(1) == 4 * H && hc.size(1) == H,
              "rnn_gate_step: weight shapes do not fit");
  const std::vector<float> pooled = channel_means(x);
  const float* we = w_embed.data_ptr<float>();
  const float* wi = w_ih.data_ptr<float>();
  const float* wh = w_hh.data_ptr<float>();
  float* h = hc.data_ptr<float>();
  float* c = h + H;
  std::vector<float> e(b_embed.data_ptr<float>(), b_embed.data_ptr<float>() + E);
  for (int64_t ch = 0; ch < C; ++ch)
    for (int64_t j = 0; j < E; ++j) e[j] += pooled[ch] * we[ch * E + j];
  std::vector<float> a(bias.data_ptr<float>(), bias.data_ptr<float>() + 4 * H);
  for (int64_t k = 0; k < E; ++k)
    for (int64_t j = 0; j < 4 * H; ++j) a[j] += e[k] * wi[k * 4 * H + j];
  for (int64_t k = 0; k < H; ++k)
    for (int64_t j = 0; j < 4 * H; ++j) a[j] += h[k] * wh[k * 4 * H + j];
  for (auto& v : a) v = 1.f / (1.f + std::exp(-v));
  const float* wp = w_proj.data_ptr<float>();
  double z = b_proj.data_ptr<float>()[0];
  for (int64_t j = 0; j < H; ++j) {
    c[j] = a[H + j] * c[j] + a[j] * (2.f * a[2 * H + j] - 1.f);
    h[j] = a[3 * H + j] * std::tanh(c[j]);
    z += h[j] * wp[j];
  }
  return z;
}

// An SDN exit head at batch 1: alpha * max + (1 - alpha) * avg adaptive pooling to o x o (PyTorch's bins), a linear
// layer, and the max softmax. Returns (logits (1, classes), confidence).
std::tuple<at::Tensor, double> exit_head(const at::Tensor& x, double alpha, const at::Tensor& weight,
                                         const at::Tensor& bias, int64_t o) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "exit_head: x must be float (1, C, H, W)");
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3), K = weight.size(0);
  TORCH_CHECK(weight.size(1) == C * o * o, "exit_head: weight does not fit the pooled features");
  const float* xp = x.data_ptr<float>();
  const int64_t sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);  // any layout (NCHW, channels-last), no copy
  std::vector<float> feat(C * o * o);
  const bool same = H == o && W == o;  // the map is already o x o: it is used as it is
  for (int64_t ch = 0; ch < C; ++ch) {
    const float* plane = xp + ch * sc;
    for (int64_t i = 0; i < o; ++i) {
      const int64_t h0 = (i * H) / o, h1 = ((i + 1) * H + o - 1) / o;
      for (int64_t j = 0; j < o; ++j) {
        float* out = &feat[(ch * o + i) * o + j];
        if (same) { *out = plane[i * sh + j * sw]; continue; }
        const int64_t w0 = (j * W) / o, w1 = ((j + 1) * W + o - 1) / o;
        float mx = -INFINITY, sum = 0.f;
        for (int64_t a = h0; a < h1; ++a)
          for (int64_t b = w0; b < w1; ++b) { const float v = plane[a * sh + b * sw]; mx = v > mx ? v : mx; sum += v; }
        const float avg = sum / static_cast<float>((h1 - h0) * (w1 - w0));
        *out = alpha == 0.0 ? avg : static_cast<float>(alpha) * mx + (1.f - static_cast<float>(alpha)) * avg;
      }
    }
  }
  at::Tensor logits = at::empty({1, K}, weight.options());
  float* z = logits.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  const int64_t F = C * o * o;
  float zmax = -INFINITY;
  for (int64_t k = 0; k < K; ++k) {
    const float* row = wp + k * F;
    float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t f = 0;
    for (; f + 8 <= F; f += 8)
      for (int l = 0; l < 8; ++l) lanes[l] += row[f + l] * feat[f + l];
    float s = bp[k];
    for (; f < F; ++f) s += row[f] * feat[f];
    for (int l = 0; l < 8; ++l) s += lanes[l];
    z[k] = s;
    zmax = s > zmax ? s : zmax;
  }
  double total = 0.0;
  for (int64_t k = 0; k < K; ++k) total += std::exp(static_cast<double>(z[k]) - zmax);
  return {logits, 1.0 / total};
}

// A CondConv block's routing and both mixed kernels at batch 1: r = sigmoid(mean_hw(x) @ router_w^T + router_b);
// kernel_i = r @ experts_i (a forced routing does not come here: it needs neither router nor mixture).
// Returns (r (1, E), kernel1 (P1), kernel2 (P2)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> condconv_mix(const at::Tensor& x, const at::Tensor& router_w,
                                                            const at::Tensor& router_b,
                                                            const at::Tensor& experts1, const at::Tensor& experts2) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "condconv_mix: x must be float (1, C, H, W)");
  const int64_t C = x.size(1), E = router_w.size(0);
  TORCH_CHECK(router_w.size(1) == C && experts1.size(0) == E && experts2.size(0) == E, "condconv_mix: shapes do not fit");
  const float* rw = router_w.data_ptr<float>();
  at::Tensor routing = at::empty({1, E}, router_w.options());
  float* r = routing.data_ptr<float>();
  const std::vector<float> pooled = channel_means(x);
  for (int64_t e = 0; e < E; ++e) {
    float s = router_b.data_ptr<float>()[e];
    for (int64_t ch = 0; ch < C; ++ch) s += pooled[ch] * rw[e * C + ch];
    r[e] = 1.f / (1.f + std::exp(-s));
  }
  // the mixtures read E kernels each: memory-bound, so BLAS (vectorized, threaded) does them
  return {routing, at::mm(routing, experts1).view({-1}), at::mm(routing, experts2).view({-1})};
}

TORCH_LIBRARY(routescope, m) {
  m.def("rnn_gate_step(Tensor x, Tensor(a!) hc, Tensor w_embed, Tensor b_embed, Tensor w_ih, Tensor w_hh, "
        "Tensor bias, Tensor w_proj, Tensor b_proj) -> float");
  m.def("exit_head(Tensor x, float alpha, Tensor weight, Tensor bias, int reduced) -> (Tensor, float)");
  m.def("condconv_mix(Tensor x, Tensor router_w, Tensor router_b, Tensor experts1, Tensor experts2) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(routescope, CPU, m) {
  m.impl("rnn_gate_step", &rnn_gate_step);
  m.impl("exit_head", &exit_head);
  m.impl("condconv_mix", &condconv_mix);
}
"""


def build_directory() -> str | None:
    """Where the kernels are built and found: ``<sys.prefix>/torch_extensions/routescope_fused`` (the virtual
    environment ``make install`` made), None (torch's own ``$TORCH_EXTENSIONS_DIR``, else ``~/.cache``) where that
    variable is set or the environment is not writable (a system-wide install)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return None
    folder = Path(sys.prefix) / "torch_extensions" / "routescope_fused"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(folder) if os.access(folder, os.W_OK) else None


@functools.cache
def fused_ops() -> bool:
    """Whether ``torch.ops.routescope`` is loaded: built (or found in the cache) on first call; False without a
    compiler or with ``ROUTESCOPE_FUSED=0``, and the callers fall back to their PyTorch operators."""
    if os.environ.get("ROUTESCOPE_FUSED", "1") == "0":
        return False
    try:
        from torch.utils.cpp_extension import load_inline

        load_inline(
            "routescope_fused",
            cpp_sources=_SOURCE,
            is_python_module=False,
            extra_cflags=["-O3"],
            verbose=False,
            build_directory=build_directory(),
        )
    except Exception as e:  # no compiler, no headers: the PyTorch operators do the same work
        log.warning("compiled batch-1 kernels unavailable (%s); using PyTorch operators", str(e).splitlines()[0][:200])
        return False
    _register_flops()
    return True


def runs_compiled(x: torch.Tensor) -> bool:
    """Whether a layer prepared for the compiled kernels (``compiled``) may call them on ``x``: the operators are
    registered for CPU float32 tensors only, so a model moved to a GPU (or to another dtype) after its fast form was
    made takes the PyTorch path, which computes the same."""
    return x.device.type == "cpu" and x.dtype == torch.float32


def _register_flops() -> None:
    @register_flop_formula(torch.ops.routescope.rnn_gate_step)
    def gate_flops(
        x_shape, hc_shape, w_embed_shape, b_embed_shape, w_ih_shape, w_hh_shape, *_, out_shape=None, **__
    ) -> int:
        """2 x the multiply-adds of the operators it replaces: the embedding, both LSTM products, the projection."""
        channels, embed = w_embed_shape
        hidden = w_hh_shape[0]
        return 2 * (channels * embed + embed * 4 * hidden + hidden * 4 * hidden + hidden)

    @register_flop_formula(torch.ops.routescope.exit_head)
    def head_flops(x_shape, alpha, weight_shape, *_, out_shape=None, **__) -> int:
        """2 x the multiply-adds of the head's linear layer (pooling multiplies nothing ``FlopCounterMode`` counts)."""
        return 2 * weight_shape[0] * weight_shape[1]

    @register_flop_formula(torch.ops.routescope.condconv_mix)
    def mix_flops(
        x_shape, router_w_shape, router_b_shape, experts1_shape, experts2_shape, *_, out_shape=None, **__
    ) -> int:
        """2 x the multiply-adds of the router's linear layer and of both kernel mixtures (``routing @ experts``)."""
        experts, channels = router_w_shape
        return 2 * (experts * channels + experts * experts1_shape[1] + experts * experts2_shape[1])


def main() -> None:
    """``make install`` builds the kernels once, so that the first model load does not wait for the compiler."""
    print("compiled batch-1 kernels:", "ready" if fused_ops() else "unavailable (PyTorch operators are used)")
