"""Model hub access for the exporter: where pretrained weights come from, whether that host answers, and
Hugging Face offline mode, so an unreachable hub fails fast instead of retrying downloads."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Iterator

import open_clip

HUB_PROBE_TIMEOUT_S = 3.0  # one connection attempt before a hub download; unreachable -> offline, fail fast


def weights_url(name: str, tag: str) -> str | None:
    """Where open_clip would fetch a pretrained tag from: the Hugging Face hub endpoint, or the tag's URL."""
    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        from huggingface_hub import constants

        return constants.ENDPOINT
    return cfg.get("url") or None


def reachable(url: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection to the URL's host, bounded by `timeout` including name resolution."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result.append(True)
        except (OSError, UnicodeError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode for the block: cached weights load, missing ones fail at once."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
