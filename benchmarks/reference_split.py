"""What the ml-100k reference-split benchmark scripts share: their arguments and the data they read.

``--split`` (train.tsv / test.tsv), ``--profiles`` (u.user / u.item), ``--seed``, ``--json``; the inner
80 / 20 split of ``train.tsv`` per user (seed 7) on which the scripts choose or fit anything, so that
``test.tsv`` is only scored.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from recstack.models.evaluation import Interactions
from recstack.offline.bench.embeddings import read_profiles, read_split_tsv, stratified_split


@dataclass
class ReferenceSplit:
    train: Interactions
    test: Interactions
    inner_train: Interactions  # 80 % of each user's train.tsv ratings
    inner_held: Interactions  # the other 20 %
    users: pd.DataFrame
    items: pd.DataFrame


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--split", type=Path, required=True, help="folder with train.tsv / test.tsv")
    ap.add_argument("--profiles", type=Path, required=True, help="MovieLens-100K folder with u.user / u.item")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", type=Path)
    return ap


def load(args: argparse.Namespace) -> ReferenceSplit:
    users, items = read_profiles(args.profiles)
    if users is None or items is None:
        raise SystemExit(f"{args.profiles} has no u.user / u.item")
    train, test = read_split_tsv(args.split / "train.tsv"), read_split_tsv(args.split / "test.tsv")
    inner_train, inner_held = stratified_split(train, ratio=0.8, seed=7)
    return ReferenceSplit(train, test, inner_train, inner_held, users, items)


def report(args: argparse.Namespace, result: dict[str, object]) -> None:
    """The result as one JSON line on stdout, and in ``--json`` when given."""
    line = json.dumps(result)
    if args.json:
        args.json.write_text(line + "\n")
    print(line)
