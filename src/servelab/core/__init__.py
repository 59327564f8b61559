"""The vocabulary shared by simulated and real engines."""

from servelab.core.batch import Batch
from servelab.core.request import Request

__all__ = ["Batch", "Request"]
