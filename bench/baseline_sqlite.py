"""Baseline A, the "FastAPI CLIP search engine" design: open_clip in torch, float32 embeddings stored as
blobs in SQLite, every query a full scan in numpy (load all blobs, dot product, argsort).

Implemented faithfully, not tuned: the query reads every row, decodes each blob with ``np.frombuffer``,
stacks them, takes the dot product with the query and sorts all scores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, path TEXT NOT NULL, embedding BLOB NOT NULL)"
)


class SqliteIndex:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path))
        self.conn.execute(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def add(self, rows: Iterable[tuple[int, str, np.ndarray]]) -> None:
        self.conn.executemany(
            "INSERT INTO images (id, path, embedding) VALUES (?, ?, ?)",
            ((int(i), p, np.asarray(v, dtype=np.float32).tobytes()) for i, p, v in rows),
        )
        self.conn.commit()

    def add_vectors(self, vectors: np.ndarray, start: int = 0, chunk: int = 20_000) -> None:
        for s in range(0, len(vectors), chunk):
            block = vectors[s : s + chunk]
            self.add((start + s + j, f"img_{start + s + j:07d}.jpg", v) for j, v in enumerate(block))

    def search(self, query: np.ndarray, k: int = 10) -> list[tuple[int, str, float]]:
        """Full scan: all blobs -> matrix -> dot -> argsort (the baseline's query path)."""
        rows = self.conn.execute("SELECT id, path, embedding FROM images").fetchall()
        ids = [r[0] for r in rows]
        paths = [r[1] for r in rows]
        matrix = np.vstack([np.frombuffer(r[2], dtype=np.float32) for r in rows])
        scores = matrix @ np.asarray(query, dtype=np.float32)
        order = np.argsort(-scores)[:k]
        return [(ids[i], paths[i], float(scores[i])) for i in order]


def torch_image_embedder(model: Any, preprocess: Any) -> Any:
    """open_clip in torch, one image at a time (the baseline's indexing loop)."""
    import torch
    from PIL import Image

    def embed(path: str | Path) -> np.ndarray:
        with torch.inference_mode():
            image = preprocess(Image.open(path).convert("RGB")).unsqueeze(0)
            return model.encode_image(image, normalize=True)[0].numpy()

    return embed


def index_images(db: SqliteIndex, paths: Sequence[Path], embed: Any) -> int:
    """Baseline A's rebuild: embed each image with torch, one at a time, insert into SQLite, commit at the end."""
    cur = db.conn.cursor()
    for i, p in enumerate(paths):
        vec = embed(p)
        cur.execute(
            "INSERT INTO images (id, path, embedding) VALUES (?, ?, ?)",
            (i, str(p), np.asarray(vec, dtype=np.float32).tobytes()),
        )
    db.conn.commit()
    return len(paths)
