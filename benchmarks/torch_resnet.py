"""The CIFAR ResNet-20 of `jaxcomp.models` ("resnet20" inside `ImageClassifier`) in PyTorch.

Shared by the benchmarks that compare jaxcomp with PyTorch on the same network:
3x3 stem of 16, three stages of three BasicBlocks (16/32/64), 1x1 conv + BN
projection shortcuts, global average pooling, a dense head; inputs are NCHW
images in [0, 1], normalised inside the model as `ImageClassifier` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.proj = None
    if stride != 1 or cin != cout:
      self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.proj is None else self.proj(x)))


class ResNet20(nn.Module):
  def __init__(self, num_classes: int = 10):
    super().__init__()
    self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn = nn.BatchNorm2d(16)
    layers, cin = [], 16
    for i, cout in enumerate((16, 32, 64)):
      for j in range(3):
        layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
        cin = cout
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(64, num_classes)
    self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = (x - self.mean) / self.std
    x = self.layers(F.relu(self.bn(self.conv(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
