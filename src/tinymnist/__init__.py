"""tinymnist: compact CNNs that reach >99% on MNIST in seconds, and the tools to use them.

Importing the package does no work. The library logs through ``logging`` under the name
"tinymnist" and is silent until an application (the CLI does) attaches a handler.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
