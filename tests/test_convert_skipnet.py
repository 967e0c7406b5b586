"""The converter of the SkipNet authors' recurrent-gate ResNets (``models.convert.skipnet``), offline: their files are
made here with random weights from the committed tables of their tensor names and shapes (``tests/data/layouts``,
written by ``make_skipnet_layouts.py`` from their architecture), saved in the legacy (non-zip) format, one of them
pickled exactly as PyTorch 0.3 did. Each converted SkipNet must give the logits and block decisions of a masked
reference forward written here from the paper (every block computed and mixed with the hard gate; gate k reads block
k's output and decides block k + 1), with random BatchNorm statistics so a BN mismatch shows."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from routescope.models import create_model, load_checkpoint
from routescope.models.checkpoint import build_meta_model, check_meta, check_usable
from routescope.models.convert import ConversionError, convert_source, layouts, read_source
from routescope.models.convert.skipnet import CIFAR_MEAN, CIFAR_STD, recognise
from routescope.models.data import CIFAR10, IMAGENET_MEAN, IMAGENET_STD
from routescope.models.trace import traced_forward

from helpers import REPO, authors_file, authors_state, layout_table as table


# --- the authors' files, made here ----------------------------------------------------------------------------------


class _Storage:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def save_like_torch03(obj, path: Path) -> None:
    """``torch.save`` of PyTorch 0.3: the legacy format (magic number, protocol 1001, system info, the pickle, the
    storage keys, then each storage's length and bytes), tensors pickled as ``torch._utils._rebuild_tensor(storage,
    offset, size, stride)`` and storages as persistent ids naming the typed CUDA storage their GPUs held."""
    storages: dict[str, torch.Tensor] = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, item):
            if not isinstance(item, _Storage):
                return None
            untyped = item.tensor.untyped_storage()
            key = str(untyped.data_ptr())
            storages.setdefault(key, item.tensor)
            return ("storage", torch.cuda.FloatStorage, key, "cuda:0", untyped.nbytes() // 4, None)

        def reducer_override(self, item):
            if isinstance(item, torch.Tensor):
                args = (_Storage(item), item.storage_offset(), tuple(item.shape), item.stride())
                return torch._utils._rebuild_tensor, args
            return NotImplemented

    with open(path, "wb") as f:
        sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
        for head in (0x1950A86A20F9469CFC6C, 1001, sys_info):
            pickle.dump(head, f, protocol=2)
        Pickler(f, protocol=2).dump(obj)
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            untyped = storages[key].untyped_storage()
            whole = torch.empty(0).set_(untyped, 0, (untyped.nbytes() // 4,))
            f.write(struct.pack("<q", whole.numel()) + whole.numpy().tobytes())


def save_legacy(obj, path: Path) -> None:
    """The legacy (non-zip) format as today's PyTorch writes it."""
    torch.save(obj, path, _use_new_zipfile_serialization=False)


# --- the reference: the paper's SkipNet, masked, on the authors' tensor names ----------------------------------------


@torch.no_grad()
def reference(state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and decisions (N, blocks - 1) of their network: every block computed on every image and mixed with its
    hard gate ``p > 0.5``; a skipped block passes its input on, through ``group{G}_ds{I}`` where it downsamples. The
    recurrent gate: global average pool, 1x1 conv to 10, one LSTM step (gates i, f, g, o), linear to one logit."""
    s = {k.removeprefix("module."): v for k, v in state.items()}

    def bn(name, t):
        stats, affine = (s[f"{name}.running_mean"], s[f"{name}.running_var"]), (s[f"{name}.weight"], s[f"{name}.bias"])
        return F.batch_norm(t, *stats, *affine)

    def conv(name, t, stride=1):
        w = s[f"{name}.weight"]
        return F.conv2d(t, w, stride=stride, padding=w.shape[-1] // 2)

    bottleneck = "group1_layer0.conv3.weight" in s
    blocks = [tuple(map(int, m.groups())) for k in s if (m := re.match(r"group(\d+)_layer(\d+)\.conv1\.weight$", k))]

    def block(g, i, t):
        stride, p = 2 if g > 1 and i == 0 else 1, f"group{g}_layer{i}"
        if bottleneck:
            out = F.relu(bn(f"{p}.bn1", conv(f"{p}.conv1", t)))
            out = F.relu(bn(f"{p}.bn2", conv(f"{p}.conv2", out, stride)))
            out = bn(f"{p}.bn3", conv(f"{p}.conv3", out))
        else:
            out = bn(f"{p}.bn2", conv(f"{p}.conv2", F.relu(bn(f"{p}.bn1", conv(f"{p}.conv1", t, stride)))))
        return F.relu(out + shortcut(f"{p}.downsample", t, stride))

    def shortcut(name, t, stride):
        return bn(f"{name}.1", conv(f"{name}.0", t, stride)) if f"{name}.0.weight" in s else t

    def gate(g, i, t, h, c):
        e = F.conv2d(t.mean((2, 3), keepdim=True), s[f"group{g}_gate{i}.1.weight"], s[f"group{g}_gate{i}.1.bias"])
        z = e.flatten(1) @ s["control.rnn.weight_ih_l0"].t() + s["control.rnn.bias_ih_l0"]
        z = z + h @ s["control.rnn.weight_hh_l0"].t() + s["control.rnn.bias_hh_l0"]
        i_, f_, g_, o_ = z.chunk(4, 1)
        c = torch.sigmoid(f_) * c + torch.sigmoid(i_) * torch.tanh(g_)
        h = torch.sigmoid(o_) * torch.tanh(c)
        logit = h @ s["control.proj.weight"].reshape(1, -1).t() + s["control.proj.bias"]
        return (torch.sigmoid(logit) > 0.5).to(t.dtype).view(-1, 1, 1, 1), h, c

    if bottleneck:
        x = F.max_pool2d(F.relu(bn("bn1", F.conv2d(x, s["conv1.weight"], stride=2, padding=3))), 3, 2, 1)
    else:
        x = F.relu(bn("bn1", conv("conv1", x)))
    h = c = x.new_zeros(x.shape[0], s["control.rnn.weight_hh_l0"].shape[1])
    x = block(*blocks[0], x)
    mask, h, c = gate(*blocks[0], x, h, c)  # gate k reads block k's output ...
    masks = []
    for g, i in blocks[1:]:  # ... and decides block k + 1
        stride = 2 if g > 1 and i == 0 else 1
        x = mask * block(g, i, x) + (1 - mask) * shortcut(f"group{g}_ds{i}", x, stride)
        masks.append(mask.view(-1))
        if (g, i) != blocks[-1]:
            mask, h, c = gate(g, i, x, h, c)
    return F.linear(x.mean((2, 3)), s["fc.weight"], s["fc.bias"]), torch.stack(masks, 1)


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    """Normalised-looking inputs of different brightness and contrast, so the gates disagree across the batch."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 2.0, n).view(-1, 1, 1, 1)
    shift = torch.linspace(-1.0, 1.0, n)[torch.randperm(n, generator=g)].view(-1, 1, 1, 1)
    return torch.randn(n, 3, size, size, generator=g) * scale + shift


def executed(trace) -> torch.Tensor:
    """The trace's skip decisions as (N, gated blocks), 1 = ran."""
    return torch.tensor([[float(d["executed"]) for d in row if d["kind"] == "skip"] for row in trace.decisions])


def assert_matches_reference(model, state: dict, x: torch.Tensor) -> None:
    """Logits and decisions of ``model`` (batched true skipping, and batch 1) equal the masked reference; the
    decisions are mixed, across the batch and within images, so both paths of blocks are exercised."""
    want_logits, want_masks = reference(state, x)
    assert ((want_masks.min(0).values == 0) & (want_masks.max(0).values == 1)).any()  # a block runs for some images
    assert ((want_masks.min(1).values == 0) & (want_masks.max(1).values == 1)).any()  # an image skips some blocks
    with torch.no_grad():
        out = model(x, gate_mode="infer")
        torch.testing.assert_close(out.actions, want_masks, rtol=0, atol=0)
        torch.testing.assert_close(out.logits, want_logits, rtol=1e-4, atol=1e-4)
        for i in (0, x.shape[0] - 1):  # batch 1: Python control flow, the path the app times
            torch.testing.assert_close(model(x[i : i + 1]), want_logits[i : i + 1], rtol=1e-4, atol=1e-4)


# --- the tests -------------------------------------------------------------------------------------------------------


def test_tables_are_the_authors_layouts():
    """The committed tables are what the converter recognises; the duplicated shortcut and the last gate are in them.
    Counts: stem 5, per block 10 (basic) or 15 (bottleneck) and 2 for its gate, 10 per downsampling block (two copies),
    LSTM and projection 6, fc 2."""
    for arch, family, layers, keys in [
        ("cifar10_rnn_gate_38", "cifar", (6, 6, 6), 249),
        ("cifar10_rnn_gate_110", "cifar", (18, 18, 18), 681),
        ("imagenet_rnn_gate_50", "imagenet", (3, 4, 6, 3), 325),
        ("imagenet_rnn_gate_101", "imagenet", (3, 4, 23, 3), 614),
    ]:
        shapes = table(arch)
        assert len(shapes) == keys and all(k.startswith("module.") for k in shapes)
        net = recognise({k[len("module.") :]: torch.empty(v, device="meta") for k, v in shapes.items()})
        assert (net.family, net.layers, net.num_classes) == (family, layers, 10 if family == "cifar" else 1000)
        assert "module.group2_ds0.0.weight" in shapes and "module.group2_layer0.downsample.0.weight" in shapes
        last = f"module.group{len(layers)}_gate{layers[-1] - 1}.1.weight"
        assert last in shapes
    assert {"skipnet-cifar", "skipnet-imagenet"} <= set(layouts())


def test_reads_a_file_as_pytorch_03_wrote_it(tmp_path):
    """``_rebuild_tensor`` and ``torch.cuda.FloatStorage`` persistent ids, two names on one storage: read with
    ``weights_only=True`` and the allow-list, no code run, ``module.`` removed, the shared storage kept."""
    payload = authors_file("cifar10_rnn_gate_38")
    path = tmp_path / "resnet-38-rnn-sp-cifar10.pth.tar"
    save_like_torch03(payload, path)
    stream = io.BytesIO(path.read_bytes())
    for _ in range(3):  # magic number, protocol, system info
        pickle.load(stream)
    listing = io.StringIO()
    pickletools.dis(stream, listing)
    found = set(re.findall(r"GLOBAL\s+'([^']+)'", listing.getvalue()))
    assert found == {"collections OrderedDict", "torch._utils _rebuild_tensor", "torch.cuda FloatStorage"}
    state, extras = read_source(path)
    assert extras == {"arch": "cifar10_rnn_gate_38", "epoch": 160, "best_prec1": 92.5}
    assert list(state) == [k[len("module.") :] for k in payload["state_dict"]]
    for key, tensor in payload["state_dict"].items():
        torch.testing.assert_close(state[key[len("module.") :]], tensor, rtol=0, atol=0)
    assert state["group2_ds0.0.weight"].data_ptr() == state["group2_layer0.downsample.0.weight"].data_ptr()


@pytest.mark.parametrize("arch", ["cifar10_rnn_gate_38", "cifar10_rnn_gate_rl_110"])
def test_cifar_skipnet_equals_the_masked_reference(tmp_path, arch):
    payload = authors_file(arch)
    path = tmp_path / f"{arch}.pth.tar"
    save_legacy(payload, path)
    model, meta = convert_source(path)  # the layout recognised from the keys
    assert meta["provenance"]["layout"] == "skipnet-cifar" and model.arch == f"skipnet_resnet{arch.rsplit('_', 1)[1]}"
    assert_matches_reference(model, payload["state_dict"], images(8, 32))


def test_imagenet_resnet50_equals_the_masked_reference(tmp_path):
    """Through a file pickled as PyTorch 0.3 did; 64x64 inputs keep it quick (the gates pool globally at any size)."""
    payload = authors_file("imagenet_rnn_gate_50")
    path = tmp_path / "resnet-50-rnn-sp-imagenet.pth.tar"
    save_like_torch03(payload, path)
    model, meta = convert_source(path, "skipnet-imagenet")
    assert model.arch == "skipnet_resnet50" and meta["name"] == "skipnet_resnet50_imagenet_sp_ucbdrive"
    assert meta["classes"][0] == "tench" and len(set(meta["classes"])) == 1000 and meta["input_size"] == [3, 224, 224]
    assert (meta["mean"], meta["std"]) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert_matches_reference(model, payload["state_dict"], images(4, 64))


@pytest.mark.slow
def test_imagenet_resnet101_equals_the_masked_reference():
    """The published HRL ResNet-101 layout, converted in memory (its file would be 180 MB), on 32x32 inputs."""
    from routescope.models.convert.skipnet import LAYOUTS

    payload = authors_file("imagenet_rnn_gate_rl_101")
    state = {k[len("module.") :]: v for k, v in payload["state_dict"].items()}
    layout = {layout.name: layout for layout in LAYOUTS}["skipnet-imagenet"]
    assert layout.matches(state)
    model, meta = layout.convert(state, {"arch": payload["arch"]})
    assert model.arch == "skipnet_resnet101" and model.num_gates == 32
    assert meta["name"] == "skipnet_resnet101_imagenet_hrl_ucbdrive" and meta["origin"]["training"] == "HRL+SP"
    assert_matches_reference(model, payload["state_dict"], images(3, 32))


def test_command_writes_a_checkpoint_both_forms_load(tmp_path):
    """``python -m models.convert`` on an HRL file; the checkpoint loads fast and train forms with the reference's
    logits and decisions, its meta is complete and records where it came from."""
    payload = authors_file("cifar10_rnn_gate_rl_38", seed=3)
    source, out = tmp_path / "resnet-38-rnn-cifar10.pth.tar", tmp_path / "skipnet38.pt"
    save_like_torch03(payload, source)
    done = subprocess.run(
        [sys.executable, "-m", "models.convert", str(source), "--from", "skipnet-cifar", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    x = images(6, 32, seed=2)
    want_logits, want_masks = reference(payload["state_dict"], x)
    for form in ("fast", "train"):
        model = load_checkpoint(out, form=form)
        logits, trace = traced_forward(model, x)
        torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(executed(trace), want_masks, rtol=0, atol=0)
    meta = model.meta
    check_meta(meta)
    check_usable(model)
    assert meta["name"] == "skipnet_resnet38_cifar10_hrl_ucbdrive" and meta["method"] == "skipnet"
    assert meta["dataset"] == "cifar10" and meta["classes"] == list(CIFAR10.classes)
    assert meta["input_size"] == [3, 32, 32] and (meta["mean"], meta["std"]) == (list(CIFAR_MEAN), list(CIFAR_STD))
    assert meta["metrics"] == {} and meta["recipe"] == {}
    assert meta["origin"] == {
        "code": "https://github.com/ucbdrive/skipnet",
        "training": "HRL+SP",
        "best_prec1": 92.5,
        "iter": 9999,
    }
    assert meta["provenance"] == {
        "source": source.name,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "layout": "skipnet-cifar",
        "converter_version": 1,
        "source_arch": "cifar10_rnn_gate_rl_38",
    }


def test_a_skipped_block_is_not_computed():
    """What the authors' code cannot show: a block its gate turns off never runs (batch 1 and batched), and forcing
    one on runs it, with later gates responding."""
    state = authors_state("cifar10_rnn_gate_38")
    model, _ = convert_source_state(state, "cifar10_rnn_gate_38")
    x = images(8, 32)
    _, masks = reference(state, x)
    calls: dict[str, int] = {}
    blocks = dict(model.named_blocks())

    def count(name):
        return lambda module, inputs, output: calls.__setitem__(name, calls.get(name, 0) + inputs[0].shape[0])

    for name in model.gate_names:
        blocks[name].conv1.register_forward_hook(count(name))
    with torch.no_grad():
        for row in range(2):
            calls.clear()
            model(x[row : row + 1])
            assert [calls.get(name, 0) for name in model.gate_names] == masks[row].int().tolist()
        calls.clear()
        model(x)
        assert [calls.get(name, 0) for name in model.gate_names] == masks.sum(0).int().tolist()
        off = model.gate_names[int(masks[0].argmin())]
        logits, trace = traced_forward(model, x[:1], overrides={off: {"executed": True}})
    forced = next(d for d in trace.decisions[0] if d["layer"] == off)
    assert forced["executed"] is True and forced.get("forced") is True


def convert_source_state(state: dict, arch: str):
    from routescope.models.convert.skipnet import convert

    return convert({k[len("module.") :]: v for k, v in state.items()}, {"arch": arch}, "cifar")


def test_cifar100_hrl_meta():
    model, meta = convert_source_state(authors_state("cifar100_rnn_gate_rl_38"), "cifar100_rnn_gate_rl_38")
    assert model.fc.out_features == 100 and meta["dataset"] == "cifar100"
    assert meta["name"] == "skipnet_resnet38_cifar100_hrl_ucbdrive"
    assert len(set(meta["classes"])) == 100 and meta["classes"][:2] == ["apple", "aquarium_fish"]
    assert (meta["mean"], meta["std"]) == (list(CIFAR_MEAN), list(CIFAR_STD))  # their data.py: one normalisation


def _refused(tmp_path, payload, layout: str | None = "skipnet-cifar") -> str:
    path = tmp_path / "source.pth.tar"
    save_legacy(payload, path)
    with pytest.raises(ConversionError) as error:
        convert_source(path, layout)
    return str(error.value)


@pytest.mark.parametrize(
    "key",
    [
        "module.group2_layer3.bn1.running_var",  # a block's own tensor
        "module.group3_ds0.1.running_mean",  # the duplicate of a shortcut, dropped but expected
        "module.group3_gate5.1.bias",  # the last gate, dropped but expected
        "module.control.rnn.bias_hh_l0",
    ],
)
def test_a_missing_key_is_named(tmp_path, key):
    payload = authors_file("cifar10_rnn_gate_38")
    del payload["state_dict"][key]
    message = _refused(tmp_path, payload)
    assert "missing" in message and key[len("module.") :] in message


def test_an_extra_key_or_a_wrong_shape_is_named(tmp_path):
    payload = authors_file("cifar10_rnn_gate_38")
    payload["state_dict"]["module.group1_layer2.conv3.weight"] = torch.zeros(16, 16, 1, 1)
    assert "unexpected 1 keys (group1_layer2.conv3.weight)" in _refused(tmp_path, payload)
    del payload["state_dict"]["module.group3_gate5.1.bias"]
    message = _refused(tmp_path, payload)
    assert "missing 1 keys (group3_gate5.1.bias); unexpected 1 keys (group1_layer2.conv3.weight)" in message
    payload = authors_file("cifar10_rnn_gate_38")
    payload["state_dict"]["module.group2_gate1.1.weight"] = torch.zeros(12, 32, 1, 1)
    message = _refused(tmp_path, payload)
    assert "group2_gate1.1.weight has shape (12, 32, 1, 1)" in message and "gates.embed.7.weight" in message


def test_shortcut_copies_that_differ_are_refused(tmp_path):
    payload = authors_file("cifar10_rnn_gate_38")
    payload["state_dict"]["module.group2_ds0.1.running_var"] = torch.ones(32)
    assert "group2_ds0.1.running_var differ" in _refused(tmp_path, payload)


def test_an_unrelated_or_mismatched_file_says_what_it_is(tmp_path):
    resnet = {"state_dict": {f"module.{k}": v for k, v in create_model("resnet20").state_dict().items()}}
    message = _refused(tmp_path, resnet, layout=None)
    assert "not a layout RouteScope converts" in message and "128 tensors" in message and "layer1.* (36)" in message
    message = _refused(tmp_path, resnet)
    assert "not a SkipNet recurrent-gate cifar checkpoint" in message and "tensors" in message
    imagenet = {"arch": "imagenet_rnn_gate_50", "state_dict": authors_state("imagenet_rnn_gate_50")}
    assert "it is the authors' imagenet layout (skipnet-imagenet)" in _refused(tmp_path, imagenet)
    wrong_arch = {**authors_file("cifar10_rnn_gate_38"), "arch": "cifar10_rnn_gate_110"}
    assert "says cifar10 SkipNet-110, but its tensors are a cifar10 SkipNet-38" in _refused(tmp_path, wrong_arch)


def test_resnet101_builders_and_imagenet_sizes():
    """The ResNet-101 backbone is torchvision's; a converted ImageNet SkipNet at 224x224 passes the load-time activation
    estimate (a meta-device forward runs every block instead of failing on the gates)."""
    assert sum(p.numel() for p in create_model("resnet101").parameters()) == 44_549_160  # torchvision resnet101
    for arch in ("skipnet_resnet50", "skipnet_resnet101"):
        payload = {"arch": arch, "config": {"num_classes": 1000}, "meta": {"input_size": [3, 224, 224]}}
        assert build_meta_model(payload).num_gates == (15 if arch.endswith("50") else 32)


def test_class_name_files():
    folder = REPO / "models" / "assets" / "classes"
    imagenet = (folder / "imagenet.txt").read_text().splitlines()
    cifar100 = (folder / "cifar100.txt").read_text().splitlines()
    assert len(set(imagenet)) == len(imagenet) == 1000 and imagenet[-1] == "toilet tissue"
    assert len(set(cifar100)) == len(cifar100) == 100 and cifar100 == sorted(cifar100)
