"""torchvision's ResNet-18 as the OGM-GE / InfoReg audio and visual encoder (BASELINES.md A.4).

No pretrained weights; the first convolution takes `in_channels` (1 for spectrograms, 3 for RGB frames);
the 512-d feature is the global average of layer4. Clips (batch, T, 3, H, W) go through the 2-D network
frame by frame and are averaged over time and space, which equals the official 3-D average pooling.
"""
from __future__ import annotations

import torchvision
from torch import Tensor, nn


class ResNet18Encoder(nn.Module):
    out_dim = 512

    def __init__(self, in_channels: int = 3):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
        net.fc = nn.Identity()  # keep the global average pool, drop the ImageNet classifier
        self.in_channels = in_channels
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3 and self.in_channels == 1:  # spectrogram (batch, freq, time)
            x = x.unsqueeze(1)
        if x.dim() == 5:  # clip (batch, T, C, H, W): every frame, then the mean over frames
            b, t = x.shape[:2]
            return self.net(x.flatten(0, 1)).view(b, t, -1).mean(1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet-18 encoder with {self.in_channels} input channels takes (batch, "
                             f"{self.in_channels}, H, W) or clips (batch, T, {self.in_channels}, H, W)"
                             + (" or spectrograms (batch, freq, time)" if self.in_channels == 1 else "")
                             + f"; got {tuple(x.shape)}")
        return self.net(x)
