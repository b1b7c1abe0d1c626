"""PyTorch reference steps for the throughput benchmark (written for it, not the official code).

    python benchmarks/torch_reference.py --spec=SPEC.json --out=OUT.json

``benchmarks/throughput.py`` writes the spec (architectures in this project's JSON format,
the subnets to cycle through, batch sizes, precision) and runs this script in its own process,
so both sides are measured in one command on one card. Steps:

* ``pss``: the PSS-Net step the way the official code trains (../shared/papers/pssnet.md §2.4,
  §7): one supernet whose layers are sliced ``W[:out, :in]`` per subnet, BN shared and sliced,
  inputs resized with align-corners bilinear; per step the max net with cross-entropy, a
  no-grad score forward of the middle subnet, then the middle subnet and the min net with
  KL(softmax(z_max) || softmax(z)) ('batchmean'), the three gradients summed into one SGD step.
* ``dcff``: the DCFF fused CIFAR ResNet step (../shared/papers/dcff.md §2.1, §2.8): every conv
  convolves with ``P @ W`` (P a fixed buffer, W the over-complete bank), option-A shortcuts,
  cross-entropy, SGD.

The MobileNet subnets' and DCFF compact ResNets' descriptions are also derived here from the
specs' tables (``spec_mobilenet_arch``, ``spec_stage_choices``, ``spec_resnet_cifar_compact``)
without the project's code, and ``tests/test_reference_steps.py`` checks the project's
against them, so a wrong stride, width or residual flag in the project is not reproduced by
the reference it is compared with.

``amp`` runs the forward passes under ``torch.autocast`` with bfloat16 and channels-last
tensors (the fast path on recent NVIDIA GPUs). Timings: median of synchronised steps after
warm-up. Only PyTorch is needed (no JAX).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


# -- the ImageNet MobileNet supernets, from the spec's tables (pssnet.md §2.1-2.3) ------------
# Written from the spec, not from the project's models, so that the reference can check them.
MBV1_POINTWISE = (64, 128, 128, 256, 256) + (512,) * 6 + (1024, 1024)
MBV1_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))  # (t, c, n, s)


def spec_make_divisible(v: float, d: int = 8, min_value: int = 8) -> int:
    """pssnet.md §2.1: round to a multiple of ``d`` (at least ``min_value``), never under 90%."""
    new_v = max(min_value, int(v + d / 2) // d * d)
    return new_v + d if new_v < 0.9 * v else new_v


def spec_stage_bases(family: str) -> tuple:
    """The stages' full widths: MBV1 stem + 13 pointwise outputs; MBV2 stem + 7 stages."""
    if family == "mobilenet_v1":
        return (32,) + MBV1_POINTWISE
    return (32,) + tuple(c for _, c, _, _ in MBV2_SETTINGS)


def spec_stage_choices(family: str, low: float = 0.75, high: float = 1.0) -> list[set]:
    """Each stage's possible widths: make_divisible(base * m), m on the 3-decimal grid."""
    mults = [k / 1000 for k in range(round(low * 1000), round(high * 1000) + 1)]
    return [{spec_make_divisible(base * m) for m in mults} for base in spec_stage_bases(family)]


def spec_mobilenet_arch(family: str, channels, num_classes: int = 1000,
                        in_channels: int = 3) -> dict:
    """The ImageNet subnet of per-stage ``channels`` in the project's JSON description:
    stem conv 3x3 stride 2; MBV1's 13 blocks with the spec's strides; MBV2's inverted
    residuals from (t, c, n, s), expansion make_divisible(t * actual input width), a residual
    iff stride 1 and equal base widths, tail 1280."""
    arch = {"family": family, "num_classes": num_classes, "in_channels": in_channels,
            "stem": channels[0], "stem_stride": 2}
    if family == "mobilenet_v1":
        arch["blocks"] = [{"out": c, "stride": s} for c, s in zip(channels[1:], MBV1_STRIDES)]
        return arch
    blocks, cin, base_cin = [], channels[0], 32
    for stage, (t, c, n, s) in enumerate(MBV2_SETTINGS):
        for j in range(n):
            stride = s if j == 0 else 1
            blocks.append({"expand": 0 if t == 1 else spec_make_divisible(cin * t),
                           "out": channels[stage + 1], "stride": stride,
                           "residual": stride == 1 and base_cin == c})
            cin, base_cin = channels[stage + 1], c
    return dict(arch, blocks=blocks, tail=1280)


# -- DCFF's compact CIFAR ResNets, from the spec's rate rules (dcff.md §4.1) ----------------
def spec_rates(text: str) -> list[float]:
    """A CIFAR ResNet cprate string (``[0.7]*2+[0.5]+...``) as its list, without eval."""
    rates = []
    for term in text.replace(" ", "").split("+"):
        match = re.fullmatch(r"\[([\d.]+)\](?:\*(\d+))?", term)
        if not match:
            raise ValueError(f"cprate term {term!r}: expected [rate] or [rate]*count")
        rates += [float(match[1])] * int(match[2] or 1)
    return rates


def spec_resnet_cifar_compact(depth: int, rates: list[float]) -> dict:
    """{"stem", "stages": [[[conv1, conv2] per block] per stage]} kept widths of a CIFAR
    ResNet-``depth``: 3N per-block conv1 rates then 3 per-stage conv2 (residual) rates, a kept
    width int(n * (1 - r)) of the stage's 16/32/64, the stem at stage 1's residual rate."""
    blocks = (depth - 2) // 6
    if len(rates) != 3 * blocks + 3:
        raise ValueError(f"ResNet-{depth} takes {3 * blocks + 3} rates, got {len(rates)}")
    conv1, residual = rates[:3 * blocks], rates[3 * blocks:]
    stages = [[[int(base * (1 - conv1[stage * blocks + b])), int(base * (1 - residual[stage]))]
               for b in range(blocks)] for stage, base in enumerate((16, 32, 64))]
    return {"stem": int(16 * (1 - residual[0])), "stages": stages}


def _he_fan_out(conv: nn.Conv2d) -> None:
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))


def _bn(x, bn: nn.BatchNorm2d, channels: int):
    """Shared BatchNorm sliced to the first ``channels`` (statistics updated in place)."""
    return F.batch_norm(x, bn.running_mean[:channels], bn.running_var[:channels],
                        bn.weight[:channels], bn.bias[:channels], bn.training, 0.1, 1e-5)


class SlicedMobileNet(nn.Module):
    """MobileNetV1/V2 supernet at max-net widths; ``forward(x, arch, resolution)`` runs the
    subnet ``arch`` (same JSON description as the JAX models) by slicing every tensor."""

    def __init__(self, full: dict):
        super().__init__()
        self.v2 = full["family"] == "mobilenet_v2"
        self.stem = nn.Conv2d(full["in_channels"], full["stem"], 3, full["stem_stride"], 1,
                              bias=False)
        self.stem_bn = nn.BatchNorm2d(full["stem"])
        self.expand, self.expand_bn = nn.ModuleList(), nn.ModuleList()
        self.dw, self.dw_bn, self.pw, self.pw_bn = (nn.ModuleList() for _ in range(4))
        cin = full["stem"]
        for block in full["blocks"]:
            mid = block.get("expand") or cin
            self.expand.append(nn.Conv2d(cin, mid, 1, bias=False) if block.get("expand")
                               else nn.Identity())
            self.expand_bn.append(nn.BatchNorm2d(mid) if block.get("expand") else nn.Identity())
            self.dw.append(nn.Conv2d(mid, mid, 3, block["stride"], 1, groups=mid, bias=False))
            self.dw_bn.append(nn.BatchNorm2d(mid))
            self.pw.append(nn.Conv2d(mid, block["out"], 1, bias=False))
            self.pw_bn.append(nn.BatchNorm2d(block["out"]))
            cin = block["out"]
        if self.v2:
            self.tail = nn.Conv2d(cin, full["tail"], 1, bias=False)
            self.tail_bn = nn.BatchNorm2d(full["tail"])
            cin = full["tail"]
        self.fc = nn.Linear(cin, full["num_classes"])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                _he_fan_out(module)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x, arch: dict, resolution: int):
        if x.shape[-1] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                              align_corners=True)
        act = F.relu6

        def conv(layer, y, out, stride=1, groups=1):
            weight = layer.weight[:out, :y.shape[1] // groups]
            return F.conv2d(y, weight, None, stride, layer.padding, 1, groups)

        x = act(_bn(conv(self.stem, x, arch["stem"], self.stem.stride), self.stem_bn,
                    arch["stem"]))
        for i, block in enumerate(arch["blocks"]):
            y = x
            if block.get("expand"):
                y = act(_bn(conv(self.expand[i], y, block["expand"]), self.expand_bn[i],
                            block["expand"]))
            mid = y.shape[1]
            y = act(_bn(conv(self.dw[i], y, mid, block["stride"], groups=mid), self.dw_bn[i],
                        mid))
            y = _bn(conv(self.pw[i], y, block["out"]), self.pw_bn[i], block["out"])
            if not self.v2:
                y = act(y)
            elif block["residual"]:
                y = y + x
            x = y
        if self.v2:
            x = act(_bn(conv(self.tail, x, arch["tail"]), self.tail_bn, arch["tail"]))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(x, self.fc.weight[:, :x.shape[1]], self.fc.bias)


class FuseConv(nn.Conv2d):
    """A 3x3 conv whose ``m`` output filters are ``P @ W`` over a bank of ``n`` (P fixed)."""

    def __init__(self, cin: int, n: int, m: int, stride: int, generator: torch.Generator):
        super().__init__(cin, n, 3, stride, 1, bias=False)
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")
        logits = torch.randn(m, n, generator=generator)
        self.register_buffer("P", torch.softmax(logits, dim=1))

    def forward(self, x):
        bank = self.weight.reshape(self.weight.shape[0], -1)
        fused = (self.P @ bank).reshape(self.P.shape[0], *self.weight.shape[1:])
        return F.conv2d(x, fused, None, self.stride, self.padding)


class FusedResNetCifar(nn.Module):
    """DCFF's fused CIFAR ResNet: ``compact`` and ``full`` descriptions give m_l and n_l."""

    def __init__(self, compact: dict, full: dict, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = FuseConv(compact["in_channels"], full["stem"], compact["stem"], 1, g)
        self.stem_bn = nn.BatchNorm2d(compact["stem"])
        self.blocks = nn.ModuleList()
        cin = compact["stem"]
        for s, (blocks, full_blocks) in enumerate(zip(compact["stages"], full["stages"])):
            for b, ((mid, out), (n_mid, n_out)) in enumerate(zip(blocks, full_blocks)):
                stride = 2 if s and b == 0 else 1
                self.blocks.append(nn.ModuleDict({
                    "conv1": FuseConv(cin, n_mid, mid, stride, g), "bn1": nn.BatchNorm2d(mid),
                    "conv2": FuseConv(mid, n_out, out, 1, g), "bn2": nn.BatchNorm2d(out)}))
                cin = out
        self.fc = nn.Linear(cin, compact["num_classes"])

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            y = F.relu(block["bn1"](block["conv1"](x)))
            y = block["bn2"](block["conv2"](y))
            if block["conv1"].stride[0] != 1 or x.shape[1] != y.shape[1]:
                x = x[:, :, ::block["conv1"].stride[0], ::block["conv1"].stride[0]]
                pad = y.shape[1] - x.shape[1]
                x = F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))
            x = F.relu(y + x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _sgd(model, case):
    return torch.optim.SGD(model.parameters(), lr=case.get("lr", 0.1),
                           momentum=case.get("momentum", 0.9),
                           weight_decay=case.get("weight_decay", 4e-5))


def _wide(z):
    """Logits in float32 for the losses, or as they are when already float32/float64."""
    return z.float() if z.dtype in (torch.bfloat16, torch.float16) else z


def pss_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """PSS-Net's decay rule (pssnet.md §8): conv weights with more than one input channel per
    group and the classifier weight decay; depthwise convs, BN and biases do not."""
    decay = [p for name, p in model.named_parameters()
             if name == "fc.weight" or (p.ndim == 4 and p.shape[1] > 1)]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


def pss_reference_step(model, optimizer, x, y, full: dict, mid: dict, low: dict,
                       autocast=None) -> dict:
    """One PSS-Net step as pssnet.md §7 writes it: the max net with cross-entropy; a no-grad
    score forward of the middle subnet (train-mode BN, pre-update weights); the middle and min
    subnets with KL(softmax(z_max) || softmax(z)) ('batchmean'); the three gradients summed
    by ``backward`` into one ``optimizer.step()``. ``mid``/``low``: {"arch", "resolution"}.
    Returns the loss terms and the score (``optimizer.step`` is left to the caller when
    ``optimizer`` is None, so that the summed gradients can be read)."""
    autocast = autocast or torch.autocast("cpu", enabled=False)
    kl = nn.KLDivLoss(reduction="batchmean")
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    with autocast:
        z_max = model(x, full, x.shape[-1])
        ce_max = F.cross_entropy(_wide(z_max), y)
    ce_max.backward()
    teacher = torch.softmax(_wide(z_max.detach()), dim=1)
    with torch.no_grad(), autocast:
        score = -F.cross_entropy(_wide(model(x, mid["arch"], mid["resolution"])), y)
    terms = []
    for net in (mid, low):
        with autocast:
            z = model(x, net["arch"], net["resolution"])
        loss = kl(F.log_softmax(_wide(z), dim=1), teacher)
        loss.backward()
        terms.append(loss.detach())
    if optimizer is not None:
        optimizer.step()
    return {"ce_max": ce_max.detach(), "score": score.detach(), "kl_mid": terms[0],
            "kl_min": terms[1]}


def pss_step_fn(case: dict, device):
    """A function running one PSS-Net step (max + middle + min net) on a fixed batch."""
    model = SlicedMobileNet(case["full_arch"]).to(device)
    memory = torch.channels_last if case.get("amp") else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = _sgd(model, case)
    batch, size = case["batch"], case["max_resolution"]
    x = torch.randn(batch, case["full_arch"]["in_channels"], size, size, device=device)
    x = x.contiguous(memory_format=memory)
    y = torch.randint(0, case["full_arch"]["num_classes"], (batch,), device=device)
    full, low = case["full_arch"], case["min"]
    middles = case["middles"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(case.get("amp")))
    count = [0]

    def step():
        mid = middles[count[0] % len(middles)]
        count[0] += 1
        return pss_reference_step(model, optimizer, x, y, full, mid, low, autocast)["score"]

    return step


def dcff_step_fn(case: dict, device):
    """A function running one DCFF fused-ResNet training step on a fixed batch."""
    memory = torch.channels_last if case.get("amp") else torch.contiguous_format
    model = FusedResNetCifar(case["compact"], case["full"]).to(device).to(memory_format=memory)
    optimizer = _sgd(model, case)
    size, batch = case["image_size"], case["batch"]
    x = torch.randn(batch, case["compact"]["in_channels"], size, size, device=device)
    x = x.contiguous(memory_format=memory)
    y = torch.randint(0, case["compact"]["num_classes"], (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(case.get("amp")))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(_wide(model(x)), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def dcff_fusion_update(weight, temperature: float, previous_scores, previous_selection,
                       first: bool, mode: str):
    """One layer's DCFF update as dcff.md §2.3-2.5 and §9.2 write it, for a (n, c, k, k)
    filter bank: D = cdist of the flattened filters (zero diagonal); P = softmax(-T D) by rows;
    KL[j, k] = mean_l P_jl log(P_jl / (P_kl + 1e-7)) ('faithful', the official expression,
    whose score is kept from before when any entry is not finite) or sum_l P_jl (log P_jl -
    log P_kl) / n in log space ('stable'); s_j = sum_k KL[j, k]; the top m = len(previous
    selection) by score, in descending order at the first update; later, 'stable' keeps the
    slot of every filter that stays and gives freed slots (in slot order) to the newcomers (in
    descending score order). Returns (P rows of the selection, scores, selection)."""
    rows = weight.reshape(weight.shape[0], -1)
    distances = torch.cdist(rows, rows)
    distances.fill_diagonal_(0.0)
    n, m = rows.shape[0], len(previous_selection)
    if mode == "faithful":  # the official code divides by t = 1 / T
        proxies = torch.softmax(-distances / (1.0 / temperature), dim=1)
        kl = (proxies[:, None, :] * torch.log(proxies[:, None, :] /
                                              (proxies[None, :, :] + 1e-7))).mean(-1)
        scores = kl.sum(1)
        if not first and not bool(torch.isfinite(scores).all()):
            scores = previous_scores
    else:
        log_p = torch.log_softmax(-distances * temperature, dim=1)
        proxies = log_p.exp()
        scores = (proxies[:, None, :] * (log_p[:, None, :] - log_p[None, :, :])).sum(-1).sum(1) / n
    top = [int(i) for i in torch.topk(scores, m).indices]
    if first or mode == "faithful":
        selection = top
    else:
        selection = [int(i) for i in previous_selection]
        newcomers = [i for i in top if i not in selection]  # already in descending score order
        for slot, filt in enumerate(selection):
            if filt not in top:
                selection[slot] = newcomers.pop(0)
    index = torch.tensor(selection)
    return proxies[index], scores, index


STEPS = {"pss": pss_step_fn, "dcff": dcff_step_fn}


def time_case(case: dict, device, steps: int, warmup: int) -> dict:
    """Median synchronised step time after ``warmup`` steps; the first step timed apart."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step = STEPS[case["kind"]](case, device)
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        value = step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if not math.isfinite(float(value)):
        raise FloatingPointError(f"{case['name']}: non-finite loss/score {float(value)}")
    return {"median_ms": 1e3 * median, "images_per_s": case["batch"] / median,
            "first_step_s": first, "steps": steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "device": (torch.cuda.get_device_name()
               if device.type == "cuda" else "cpu"), "threads": torch.get_num_threads(),
               "cases": {}}
    for case in spec["cases"]:
        results["cases"][case["name"]] = time_case(case, device, spec["steps"], spec["warmup"])
        print(f"torch {case['name']}: {results['cases'][case['name']]['median_ms']:.1f} ms/step",
              flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
