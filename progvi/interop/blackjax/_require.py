"""The lazy import of BlackJAX, with the extra to install when it is missing."""

import importlib

EXTRA = 'pip install "progvi[blackjax]"'


def blackjax(purpose: str):
    """The `blackjax` module, or an ImportError naming `purpose` and the extra."""
    try:
        return importlib.import_module("blackjax")
    except ImportError as error:
        raise ImportError(
            f"pv.interop.blackjax.{purpose} runs BlackJAX, which is not installed. Install "
            f"progvi's BlackJAX extra: {EXTRA}"
        ) from error
