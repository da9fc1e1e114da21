"""tinymnist: compact CNNs that reach >99% on MNIST in seconds, and the tools to use them.

Importing the package does no work: the submodules are imported where they are used.
"""

__version__ = "0.1.0"
