"""Demo model: a tiny OpenCLIP trained in this repo on synthetic shapes, so search works offline."""

from pathlib import Path

MODEL_DIR: Path = Path(__file__).parent / "model"
MODEL_NAME: str = "demo-clip"
CONFIG_PATH: Path = MODEL_DIR / f"{MODEL_NAME}.json"
CHECKPOINT_PATH: Path = MODEL_DIR / f"{MODEL_NAME}.pt"

__all__ = ["CHECKPOINT_PATH", "CONFIG_PATH", "MODEL_DIR", "MODEL_NAME"]
