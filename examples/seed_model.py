"""The network the job began with, written as a user would write it: three 3x3 convolutions
(16, 24 and 32 channels) with BatchNorm, ReLU and Dropout, two max-pools, global average
pooling and one linear layer. 11,058 parameters.

    tinymnist summary examples/seed_model.py:SeedNet
    tinymnist train --model examples/seed_model.py:SeedNet --preset cnn20k --max-params 20000
"""

from torch import nn


class SeedNet(nn.Module):
    def __init__(self, dropout: float = 0.05):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout))

        self.features = nn.Sequential(
            block(1, 16), nn.MaxPool2d(2),  # (N, 16, 14, 14)
            block(16, 24), nn.MaxPool2d(2),  # (N, 24, 7, 7)
            block(24, 32),  # (N, 32, 7, 7)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):  # x: (N, 1, 28, 28), normalized with MNIST's mean and std
        return self.head(self.features(x))  # (N, 10) logits
