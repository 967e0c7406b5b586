"""timm's CondConv EfficientNets converted (``models.convert.timm_condconv``) and checked against timm's own forward,
without timm: the weights are a seeded draw from timm's key table (``tests/data/layouts``), the expected logits and
per-block routing weights were computed by timm (``tools/make_timm_golden.py``, ``tests/data/timm_cc_golden.npz``)."""

from __future__ import annotations

import hashlib
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from routescope.models.checkpoint import load_checkpoint
from routescope.models.convert import ConversionError, convert_source, detect_layout, layouts
from routescope.models.convert.__main__ import main as convert_main
from routescope.models.cost import full_macs
from routescope.models.efficientnet import CondConvEfficientNet, CondConvMBConv, EfficientNet, MBConv
from routescope.models.layers.condconv import CondConv2d
from routescope.models.layers.padding import SamePad2d, same_padding
from routescope.models.trace import traced_forward
from tools.make_timm_golden import GOLDEN, MODELS, checksum, draw_state, golden_inputs, read_table

TF, PT = "timm-tf-efficientnet-cc-b0", "timm-efficientnet-cc-b0"
BLOCKS = [
    "blocks.4.0",
    "blocks.4.1",
    "blocks.4.2",
    "blocks.5.0",
    "blocks.5.1",
    "blocks.5.2",
    "blocks.5.3",
    "blocks.6.0",
]


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@cache
def timm_state(table: str) -> dict[str, torch.Tensor]:
    """The seeded draw of timm's tensors (the one the golden file was made with)."""
    with np.load(GOLDEN) as data:
        stats = data[f"{table}/stats"]
    return draw_state(read_table(table), stats)


@pytest.fixture(scope="module", autouse=True)
def _free_the_draws():
    """The drawn weights (150 MB for both tables) are kept for this module only."""
    yield
    timm_state.cache_clear()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """``source(table, fmt)``: the drawn weights as a file timm's users have: ``safetensors`` (the Hugging Face hub's),
    ``pth`` (a plain state dict) or ``wrapped`` (``{"state_dict": ..., "arch": ...}``, as training scripts save)."""
    folder = tmp_path_factory.mktemp("timm")

    @cache
    def write(table: str, fmt: str) -> Path:
        state = timm_state(table)
        if fmt == "safetensors":
            path = folder / f"{table}.safetensors"
            save_file(state, str(path))
        else:
            path = folder / f"{table}.{fmt}.pth"
            torch.save({"state_dict": state, "arch": "efficientnet", "epoch": 3} if fmt == "wrapped" else state, path)
        return path

    return write


@pytest.fixture(scope="module")
def tf4e(source):
    """The converted tf_efficientnet_cc_b0_4e (training form) and its source file."""
    path = source("timm_cc_b0_4e", "safetensors")
    model, meta = convert_source(path)
    return model, meta, path


@pytest.fixture(scope="module")
def tf4e_fast(tf4e, tmp_path_factory):
    """The same written as a RouteScope checkpoint by the command line and loaded in the fast form."""
    out = tmp_path_factory.mktemp("ckpt") / "tf_cc_b0_4e.pt"
    assert convert_main([str(tf4e[2]), "--out", str(out)]) == 0  # recognised without --from
    return load_checkpoint(out)


def assert_matches_timm(logits: torch.Tensor, routing: torch.Tensor, golden: dict, name: str, kind: str) -> None:
    want = torch.from_numpy(golden[f"{name}/{kind}/logits"])
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(logits, want, atol=1e-4 * scale, rtol=0)
    timm_routing = torch.stack([torch.from_numpy(golden[f"{name}/{kind}/routing/{b}"]) for b in BLOCKS], 1)
    torch.testing.assert_close(routing, timm_routing, atol=1e-5, rtol=0)


def routing_of(trace) -> torch.Tensor:
    """(B, blocks, E) routing weights from a trace's decisions."""
    return torch.tensor([[d["weights"] for d in decisions if d["kind"] == "routing"] for decisions in trace.decisions])


def assert_drawn_as_timm_ran(table: str, golden: dict) -> None:
    """The seeded weights are the golden file's: torch's random stream did not change."""
    keys, state = read_table(table)["keys"], timm_state(table)
    assert list(state) == list(keys) and all(list(state[k].shape) == keys[k] for k in keys)
    assert checksum(state) == pytest.approx(float(golden[f"{table}/weights_checksum"]), rel=1e-9), (
        "the seeded draw changed (another torch?): regenerate with tools/make_timm_golden.py"
    )
    assert all((v > 0).all() for k, v in state.items() if k.endswith("running_var"))


def test_the_draw_is_the_one_timm_ran(golden):
    assert checksum(golden_inputs()) == pytest.approx(float(golden["inputs_checksum"]), rel=1e-9)
    assert_drawn_as_timm_ran("timm_cc_b0_4e", golden)


@torch.no_grad()
def test_tf_4e_from_safetensors_gives_timms_logits_and_routing(tf4e, golden):
    model, meta, _ = tf4e
    assert isinstance(model, CondConvEfficientNet) and model.arch == "tf_efficientnet_cc_b0_4e"
    assert model.routing_layers() == BLOCKS and model.num_experts == 4 and not model.training
    for kind, x in golden_inputs().items():  # 224x224, and 99x131 where TF's padding is asymmetric differently
        out = model(x, return_routing=True)
        assert_matches_timm(out.logits, out.routing, golden, "tf_efficientnet_cc_b0_4e", kind)
        # the same weights with PyTorch's symmetric padding and eps 1e-5 give timm's other model, not this one
        assert (out.logits - torch.from_numpy(golden[f"efficientnet_cc_b0_4e/{kind}/logits"])).abs().max() > 0.1


@torch.no_grad()
def test_fast_form_gives_timms_logits_and_the_same_decisions(tf4e, tf4e_fast, golden):
    fast = tf4e_fast
    assert fast.is_fast_form and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert fast.meta["provenance"]["layout"] == TF
    logits, trace = traced_forward(fast, golden_inputs()["square"])
    assert_matches_timm(logits, routing_of(trace), golden, "tf_efficientnet_cc_b0_4e", "square")
    x = golden_inputs()["odd"]
    torch.testing.assert_close(fast(x, return_routing=True), tf4e[0](x, return_routing=True), atol=1e-5, rtol=0)


@torch.no_grad()
def test_trace_records_each_blocks_routing_and_counts_macs(tf4e_fast, golden):
    model = tf4e_fast
    x = golden_inputs()["odd"]
    logits, trace = traced_forward(model, x)
    assert model.decision_layers() == dict.fromkeys(BLOCKS, "routing")
    entries = trace.decisions[0]
    assert [e["layer"] for e in entries] == BLOCKS and all(e["kind"] == "routing" for e in entries)
    assert all(len(e["weights"]) == 4 and "forced" not in e for e in entries)
    assert_matches_timm(logits, routing_of(trace), golden, "tf_efficientnet_cc_b0_4e", "odd")
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert float(trace.macs[0]) == pytest.approx(counter.get_total_flops() / 2, rel=0.01)
    dense = model.dense_counterpart()
    assert type(dense) is EfficientNet and dense.tf_same and dense.bn_eps == 1e-3
    assert 0.9 * float(trace.macs[0]) < full_macs(model, (3, 99, 131)) < float(trace.macs[0])  # routers and mixing


@torch.no_grad()
def test_forcing_a_routing_runs_it_records_it_and_later_blocks_respond(tf4e_fast):
    model = tf4e_fast
    x = golden_inputs()["odd"]
    logits, trace = traced_forward(model, x)
    forced = {"blocks.5.0": {"weights": [1.0, 0.0, 0.0, 0.0]}}
    forced_logits, forced_trace = traced_forward(model, x, overrides=forced)
    assert (forced_logits - logits).abs().max() > 1e-3
    for before, after in zip(trace.decisions, forced_trace.decisions):
        entry = {e["layer"]: e for e in after}
        assert entry["blocks.5.0"]["forced"] is True and entry["blocks.5.0"]["weights"] == [1.0, 0.0, 0.0, 0.0]
        assert [e["weights"] for e in before[:3]] == [e["weights"] for e in after[:3]]  # earlier blocks: as decided
        assert before[4]["weights"] != after[4]["weights"] and "forced" not in entry["blocks.5.1"]
    again, _ = traced_forward(model, x)
    assert torch.equal(again, logits)  # the override lived in the trace, not in the model
    with pytest.raises(ValueError, match="4 expert weights"):
        traced_forward(model, x, overrides={"blocks.5.0": {"weights": [1.0, 0.0]}})


def test_meta_and_provenance(tf4e):
    model, meta, path = tf4e
    assert model.meta is meta
    assert meta["name"] == "tf_efficientnet_cc_b0_4e" and meta["method"] == "condconv" == model.method
    assert meta["dataset"] == "imagenet" and len(meta["classes"]) == 1000 == len(set(meta["classes"]))
    assert meta["classes"][:2] == ["tench", "goldfish"] and meta["classes"][999] == "toilet tissue"
    assert meta["input_size"] == [3, 224, 224] and meta["mean"] == meta["std"] == [0.5, 0.5, 0.5]
    assert meta["crop_pct"] == 0.875 and meta["interpolation"] == "bicubic"
    assert meta["recipe"] == {} and meta["metrics"] == {}
    assert meta["source"] == {
        "library": "timm",
        "model": "tf_efficientnet_cc_b0_4e",
        "hf_hub_id": "timm/tf_efficientnet_cc_b0_4e.in1k",
    }
    assert meta["provenance"] == {
        "source": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "layout": TF,
        "converter_version": 1,
    }


def test_layouts_are_declared_and_recognised(tf4e):
    known = layouts()
    assert {TF, PT} <= set(known)
    state = timm_state("timm_cc_b0_4e")
    assert detect_layout(state) is known[TF]  # the symmetric-padding layout has the same keys: only with --from
    assert not known[PT].matches(state)
    assert not known[TF].matches({k[len("blocks.") :]: v for k, v in state.items()})
    assert not known[TF].matches({"conv1.weight": torch.zeros(16, 3, 3, 3)})


@pytest.mark.parametrize(
    "change,named,recognised",
    [
        (lambda s: s.pop("blocks.5.2.conv_dw.weight"), "missing 1 keys (blocks.5.2.conv_dw.weight)", False),
        (
            lambda s: s.__setitem__("blocks.6.0.x.weight", torch.zeros(3)),
            "unexpected 1 keys (blocks.6.0.x.weight)",
            False,
        ),
        (
            lambda s: s.__setitem__("blocks.4.1.conv_pwl.weight", torch.zeros(4, 7)),
            "blocks.4.1.conv_pwl.weight has",
            True,
        ),
        (lambda s: s.__setitem__("classifier.weight", torch.zeros(10, 1280)), "10 classes, not ImageNet's 1000", True),
        (lambda s: s.__setitem__("blocks.4.0.routing_fn.weight", torch.zeros(6, 80)), "4 or 8 experts", False),
    ],
)
def test_a_file_that_does_not_fit_is_refused_naming_its_keys(tmp_path, change, named, recognised):
    state = dict(timm_state("timm_cc_b0_4e"))
    change(state)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ConversionError) as refused:
        convert_source(path, TF)
    assert named in str(refused.value)
    # recognised from its key names: a file with timm's names but a bad shape is refused naming the tensor
    assert (detect_layout(state) is layouts()[TF]) == recognised


@torch.no_grad()
def test_blocks_are_timms():
    model = CondConvEfficientNet(tf_same=True, bn_eps=1e-3, num_experts=8)
    blocks = dict(model.named_blocks())
    assert (
        len(blocks) == 16 and not blocks["blocks.0.0"].expands and blocks["blocks.0.0"].se.conv_reduce.out_channels == 8
    )
    assert all(isinstance(b, CondConvMBConv) == (name in BLOCKS) for name, b in blocks.items())
    assert all(type(b) is MBConv for name, b in blocks.items() if name not in BLOCKS)
    block = blocks["blocks.5.0"]  # stride 2, 5x5 depthwise: TF pads it per input size, a grouped CondConv
    assert isinstance(block.pad2, SamePad2d) and block.conv2.padding == 0 and block.conv2.groups == 672
    assert all(isinstance(c, CondConv2d) and c.num_experts == 8 for c in (block.conv1, block.conv2, block.conv3))
    assert isinstance(model.stem[0], SamePad2d) and isinstance(blocks["blocks.5.1"].pad2, torch.nn.Identity)
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(
        math.prod(s)
        for k, s in read_table("timm_cc_b0_8e")["keys"].items()
        if "running" not in k and "num_batches" not in k
    )
    plain = CondConvEfficientNet(num_experts=4).plain()
    assert (
        isinstance(plain.stem[0], torch.nn.Identity) and plain.stem[1].padding == (1, 1) and plain.stem[2].eps == 1e-5
    )


def test_tf_same_padding_rule():
    """TF "SAME": ceil(n / s) outputs, the odd pixel of padding after (timm's pad_same, TF's conv2d)."""
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(56, 5, 2) == (1, 2)
    assert same_padding(99, 5, 2) == (2, 2) and same_padding(131, 3, 2) == (1, 1) and same_padding(7, 3, 1) == (1, 1)
    x = torch.arange(2 * 7 * 8, dtype=torch.float32).view(1, 2, 7, 8)
    padded = SamePad2d(3, 2)(x)
    assert padded.shape == (1, 2, 9, 9) and torch.equal(padded[..., 1:8, 0:8], x)  # 1 above, 1 below; 0 left, 1 right


@torch.no_grad()
def test_tf_8e_from_a_wrapped_pth_in_both_forms(source, golden, tmp_path):
    assert_drawn_as_timm_ran("timm_cc_b0_8e", golden)
    path = source("timm_cc_b0_8e", "wrapped")
    out = tmp_path / "tf_cc_b0_8e.pt"
    assert convert_main([str(path), "--from", TF, "--out", str(out)]) == 0
    train = load_checkpoint(out, form="train")
    assert train.arch == "tf_efficientnet_cc_b0_8e" and train.num_experts == 8
    assert train.meta["provenance"]["source_arch"] == "efficientnet"  # what the file said it was
    for kind, x in golden_inputs().items():
        out_train = train(x, return_routing=True)
        assert_matches_timm(out_train.logits, out_train.routing, golden, "tf_efficientnet_cc_b0_8e", kind)
    fast = load_checkpoint(out)
    logits, trace = traced_forward(fast, golden_inputs()["square"])
    assert_matches_timm(logits, routing_of(trace), golden, "tf_efficientnet_cc_b0_8e", "square")


@torch.no_grad()
def test_untrained_layout_from_a_plain_pth(source, golden):
    model, meta = convert_source(source("timm_cc_b0_4e", "pth"), PT)
    assert model.arch == "efficientnet_cc_b0_4e" and not model.tf_same and model.bn_eps == 1e-5
    assert (
        meta["mean"] == [0.485, 0.456, 0.406]
        and meta["std"] == [0.229, 0.224, 0.225]
        and "hf_hub_id" not in meta["source"]
    )
    for kind, x in golden_inputs().items():
        out = model(x, return_routing=True)
        assert_matches_timm(out.logits, out.routing, golden, "efficientnet_cc_b0_4e", kind)
    assert set(MODELS) == {"tf_efficientnet_cc_b0_4e", "tf_efficientnet_cc_b0_8e", "efficientnet_cc_b0_4e"}
