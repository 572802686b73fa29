"""export.hub: the reachability probe is bounded, and offline mode is scoped to its block."""

from __future__ import annotations

import socket
import threading

import pytest

from export import hub


def test_reachable_is_bounded_even_when_name_resolution_hangs(monkeypatch):
    release = threading.Event()

    def hanging(*args, **kwargs):
        release.wait(60)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", hanging)
    try:
        assert hub.reachable("https://huggingface.co", timeout=0.2) is False
        assert not release.is_set()  # returned while the connection attempt was still hanging
    finally:
        release.set()


def test_hub_offline_is_restored_after_the_block(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(RuntimeError), hub.hub_offline():
        assert constants.HF_HUB_OFFLINE is True
        raise RuntimeError("load failed")
    assert constants.HF_HUB_OFFLINE is False
