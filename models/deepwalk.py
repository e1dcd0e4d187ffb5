"""DeepWalk (Perozzi et al., 2014) on the weighted user–item graph, with gensim's Word2Vec skip-gram.

Walks: ``walks_per_node`` weighted random walks of ``walk_length`` from every node
(:class:`~recstack.models.graph.WeightedWalker`, all walkers advance together). They are written to a
corpus file, one walk a line, and gensim trains skip-gram with negative sampling on it (``corpus_file`` mode
runs its workers without the GIL). Optionally the session item sequences join the corpus (item2vec).

Determinism: walks come from a seeded torch generator; gensim is seeded, uses a stable hash for its initial
vectors (Python's ``hash`` of strings changes per process) and, with ``workers=1``, is bit-reproducible.
More workers train faster but thread scheduling then changes the result slightly.

Output: user and item vectors (L2-normalised, so recall by inner product is cosine similarity) and each
item's nearest items (item-to-item recall).
"""

from __future__ import annotations

import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from recstack.models.graph import CSRGraph, WeightedWalker


@dataclass(frozen=True)
class DeepWalkConfig:
    dim: int = 64
    walks_per_node: int = 10
    walk_length: int = 40
    window: int = 5
    negative: int = 5
    epochs: int = 5
    alpha: float = 0.025
    sample: float = 0.0
    ns_exponent: float = 0.0
    score: str = "in_out"
    use_sessions: bool = False
    return_p: float = 1.0  # node2vec's return parameter (q = 1): a step back is drawn 1 / p as often
    workers: int = 1
    seed: int = 42

    def __post_init__(self) -> None:
        if self.score not in ("in_out", "cosine", "dot"):
            raise ValueError(f"score must be in_out, cosine or dot, got {self.score!r}")
        if min(self.dim, self.walks_per_node, self.walk_length, self.window, self.epochs, self.workers) <= 0:
            raise ValueError("dim, walks_per_node, walk_length, window, epochs and workers must be positive")
        if not self.return_p > 0:
            raise ValueError(f"return_p must be positive, got {self.return_p}")


class _EpochProgress(CallbackAny2Vec):  # type: ignore[misc]
    """Reports each word2vec epoch: training can take minutes on a large graph."""

    def __init__(self, progress: Callable[[str], None], epochs: int) -> None:
        self.progress, self.epochs, self.epoch, self.t0 = progress, epochs, 0, time.perf_counter()

    def on_epoch_end(self, model: Word2Vec) -> None:
        self.epoch += 1
        self.progress(
            f"deepwalk: word2vec epoch {self.epoch}/{self.epochs} ({time.perf_counter() - self.t0:.1f}s)"
        )


def stable_hash(text: str) -> int:
    """gensim's ``hashfxn`` for initial vectors: the same in every process (``hash`` is salted per process)."""
    return zlib.crc32(text.encode())


@dataclass
class DeepWalkResult:
    vectors: np.ndarray  # (num_nodes, dim) float32; rows of nodes that never appear in a walk are zero
    context: np.ndarray  # (num_nodes, dim) the output ("context") vectors of the skip-gram
    history: dict[str, float]


def generate_walks(graph: CSRGraph, cfg: DeepWalkConfig, batch: int = 65536) -> torch.Tensor:
    """(walks_per_node × nodes-with-edges, walk_length) walks; each round starts once from every node."""
    walker = WeightedWalker(graph, cfg.return_p)
    gen = torch.Generator().manual_seed(cfg.seed)
    starts = torch.nonzero(graph.degree() > 0).squeeze(1)
    out = []
    for _ in range(cfg.walks_per_node):
        order = starts[torch.randperm(len(starts), generator=gen)]
        for lo in range(0, len(order), batch):
            out.append(walker.walks(order[lo : lo + batch], cfg.walk_length, gen))
    return torch.cat(out) if out else torch.empty(0, cfg.walk_length, dtype=torch.int64)


def _write_corpus(path: Path, walks: torch.Tensor, extra: Sequence[np.ndarray]) -> int:
    tokens = 0
    with open(path, "w") as f:
        for lo in range(0, len(walks), 100_000):
            block = walks[lo : lo + 100_000].numpy()
            lines = [" ".join(map(str, row[row >= 0].tolist())) for row in block]
            tokens += sum(int((row >= 0).sum()) for row in block)
            f.write("\n".join(lines) + "\n")
        for seq in extra:
            if len(seq) > 1:
                f.write(" ".join(map(str, np.asarray(seq).tolist())) + "\n")
                tokens += len(seq)
    return tokens


def train_deepwalk(
    graph: CSRGraph, cfg: DeepWalkConfig, sequences: Sequence[np.ndarray] = (),
    progress: Callable[[str], None] | None = None,
) -> DeepWalkResult:  # fmt: skip
    """Node vectors for ``graph``; ``sequences`` (node-id arrays, e.g. sessions' items) are used when
    ``cfg.use_sessions`` is set."""
    t0 = time.perf_counter()
    walks = generate_walks(graph, cfg)
    t_walks = time.perf_counter() - t0
    if progress:
        progress(f"deepwalk: {len(walks):,} walks of {cfg.walk_length} in {t_walks:.1f}s")
    with tempfile.TemporaryDirectory(prefix="recstack-deepwalk-") as tmp:
        corpus = Path(tmp) / "walks.txt"
        tokens = _write_corpus(corpus, walks, sequences if cfg.use_sessions else ())
        if tokens == 0:
            raise ValueError("the graph has no edges: nothing to walk")
        w2v = Word2Vec(
            corpus_file=str(corpus), vector_size=cfg.dim, window=cfg.window, min_count=1, sg=1, hs=0,
            negative=cfg.negative, ns_exponent=cfg.ns_exponent, sample=cfg.sample, alpha=cfg.alpha, epochs=cfg.epochs, seed=cfg.seed,
            workers=cfg.workers, hashfxn=stable_hash,
            callbacks=[_EpochProgress(progress, cfg.epochs)] if progress else (),
        )  # fmt: skip
    vectors = np.zeros((graph.num_nodes, cfg.dim), np.float32)
    keys = np.asarray([int(k) for k in w2v.wv.index_to_key], np.int64)
    vectors[keys] = w2v.wv.vectors
    context = np.zeros_like(vectors)
    context[keys] = w2v.syn1neg
    train_s = time.perf_counter() - t0
    if progress:
        progress(f"deepwalk: word2vec on {tokens:,} tokens, {train_s:.1f}s in all")
    return DeepWalkResult(vectors=vectors, context=context, history={"walks": float(len(walks)), "tokens": float(tokens),
                                                    "walk_s": t_walks, "train_s": train_s})  # fmt: skip


def config_params(cfg: DeepWalkConfig) -> dict[str, object]:
    return asdict(cfg)
