"""A second example: a function that returns the model, built from tinymnist's own blocks.
Depthwise-separable convolutions keep it under 5,000 parameters.

    tinymnist summary examples/separable_net.py:separable_net --max-params 5000
    tinymnist train --model examples/separable_net.py:separable_net --preset cnn2k --max-params 5000
"""

from torch import nn

from tinymnist.models import Head, conv_bn, separable_conv_bn


def separable_net(width: int = 32) -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 16, pool=True),  # (N, 16, 14, 14)
        separable_conv_bn(16, width),
        separable_conv_bn(width, width, pool=True),  # (N, width, 7, 7)
        separable_conv_bn(width, width),
        Head(width),  # global average, then linear to 10 logits
    )
