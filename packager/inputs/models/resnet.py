"""ResNet-18 (He et al., 2015) in plain torch, for the seeded CI model of ``artifacts/resnet-tvm``.

torchvision does not import beside the pinned torch here, so the network is
written out; its layer names and shapes follow torchvision's ``resnet18`` so a
torchvision state dict loads into it unchanged. The seeded recipe builds it
under ``torch.manual_seed`` and then gives the batch-norm layers seeded
statistics as well: with torch's defaults (mean 0, var 1, weight 1, bias 0)
every batch norm is the identity, and TVM's and onnxruntime's batch-norm
folding would go untested.
"""

from __future__ import annotations

from typing import Any


def _modules() -> Any:
    # torch is imported lazily: the package must import without the `convert` extra.
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample: nn.Module | None = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, layers: tuple[int, int, int, int], num_classes: int) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._layer(64, layers[0], 1)
            self.layer2 = self._layer(128, layers[1], 2)
            self.layer3 = self._layer(256, layers[2], 2)
            self.layer4 = self._layer(512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
            mods = [BasicBlock(self.inplanes, planes, stride)]
            self.inplanes = planes
            mods += [BasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*mods)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return torch, nn, ResNet


def resnet18(num_classes: int = 1000) -> Any:
    """ResNet-18 with torch's default initialisation (draws from torch's global generator)."""
    _, _, ResNet = _modules()
    return ResNet((2, 2, 2, 2), num_classes)


def seeded(builder: Any, seed: int, *args: Any, **kwargs: Any) -> Any:
    """``builder(*args, **kwargs)`` with every weight and batch-norm statistic drawn from ``seed``."""
    torch, nn, _ = _modules()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = builder(*args, **kwargs)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d):
                # torchvision's initialisation: with torch's default the signal fades layer by
                # layer and every image gets nearly the same logits, which would test little.
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu", generator=gen)
            elif isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                mod.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
    return net.eval()
