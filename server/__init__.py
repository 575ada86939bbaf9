"""sluice's gateway: ONNX models served over the Open Inference Protocol v2, with batching and rollouts.

The public surface is small: ``create_app(settings)`` (an ASGI app for any server) and ``Settings``.
Both load on first use, so ``import sluice.server.settings`` (or any submodule) stays light.

    >>> from sluice.server import Settings
    >>> Settings(repository="models").port
    8000
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.server.app import create_app
    from sluice.server.settings import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sluice.server.app import create_app

        return create_app
    if name == "Settings":
        from sluice.server.settings import Settings

        return Settings
    raise AttributeError(f"module 'sluice.server' has no attribute {name!r}")
