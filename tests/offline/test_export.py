"""`recstack export recommendations` on a small real MovieLens directory (a slice of ml-100k)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from recstack.features.settings import load_settings
from recstack.models.deepwalk import DeepWalkConfig
from recstack.models.ensemble import EnsembleConfig
from recstack.models.recall import DEFAULT_GRAPHSAGE
from recstack.offline.cli import main
from recstack.offline.jobs.export import ExportConfig, evaluate_export, export_recommendations

SMALL = EnsembleConfig(
    deepwalk_seeds=1, graphsage_seeds=1, deepwalk=DeepWalkConfig(dim=16, walks_per_node=3, walk_length=20, epochs=1),
    graphsage=dataclasses.replace(DEFAULT_GRAPHSAGE, dim=16, epochs=2, negatives=64),
)  # fmt: skip


@pytest.fixture(scope="module")
def small_ml(ml100k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ratings of the first 120 users, split per user into train (as u.data) and test."""
    out = tmp_path_factory.mktemp("ml-small")
    r = pd.read_csv(ml100k / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    r = r[r["u"] <= 120].sample(frac=1.0, random_state=0)
    test = r.groupby("u").head(5)
    train = r.drop(test.index)
    train.to_csv(out / "u.data", sep="\t", header=False, index=False)
    test.to_csv(out / "test.tsv", sep="\t", header=False, index=False)
    train.to_csv(out / "train.tsv", sep="\t", header=False, index=False)
    for name in ("u.user", "u.item"):
        (out / name).write_bytes((ml100k / name).read_bytes())
    return out


def test_export_covers_every_user_excludes_seen_and_is_deterministic(small_ml: Path, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    cfg = ExportConfig(k=10, seed=7, ensemble=SMALL)
    first = export_recommendations(settings, small_ml, tmp_path / "a.csv", cfg, workdir=tmp_path / "w1")
    second = export_recommendations(settings, small_ml, tmp_path / "b.csv", cfg, workdir=tmp_path / "w2")
    a = pd.read_csv(first.out)
    assert list(a.columns) == ["user_id", "item_id", "score", "rank"]
    train = pd.read_csv(small_ml / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    assert set(a["user_id"]) == set(train["u"]) and first.users == train["u"].nunique() == 120
    assert (a.groupby("user_id").size() == 10).all()
    assert all(ranks == list(range(1, 11)) for ranks in a.groupby("user_id")["rank"].apply(list))
    assert not a.groupby("user_id")["item_id"].apply(lambda s: s.duplicated().any()).any()
    seen = set(zip(train["u"], train["i"], strict=True))
    assert not any((u, i) in seen for u, i in zip(a["user_id"], a["item_id"], strict=True))
    assert first.out.read_bytes() == (tmp_path / "b.csv").read_bytes()  # same seed, same file
    assert second.items_covered == first.items_covered == a["item_id"].nunique()
    metrics = evaluate_export(first.out, small_ml / "test.tsv", small_ml / "train.tsv")
    assert metrics["users"] == 120 and metrics["ndcg@10"] > 0.05  # far above chance (~0.006) on 1,682 items


def test_coverage_controls_widen_coverage(small_ml: Path, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")

    def run(name: str, **kw: float) -> tuple[int, object, pd.DataFrame]:
        cfg = ExportConfig(seed=7, ensemble=SMALL, **kw)  # type: ignore[arg-type]
        report = export_recommendations(
            settings, small_ml, tmp_path / f"{name}.csv", cfg, workdir=tmp_path / "w"
        )
        return report.items_covered, report.floor, pd.read_csv(report.out)

    plain, no_floor, plain_rows = run("plain", exposure_discount=0.0, coverage_floor=0.0)
    assert no_floor is None
    spread, _, _ = run("spread", exposure_discount=0.5, coverage_floor=0.0)
    assert spread > plain
    floored, floor, rows = run("floor", exposure_discount=0.0, coverage_floor=0.2)
    assert (
        floor is not None
        and floor.items_before == plain
        and floor.items_after == floored == rows["item_id"].nunique()
    )
    assert floored > plain and floor.swaps == floored - plain  # each swap adds one item and uncovers none
    assert (rows.groupby("user_id").size() == 10).all()
    # at most two swaps per list: every list keeps at least 8 of its plain items
    kept = pd.merge(rows, plain_rows, on=["user_id", "item_id"]).groupby("user_id").size()
    assert len(kept) == 120 and (kept >= 8).all()


def test_cli_export_and_evaluate(small_ml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("RECSTACK_HOME", str(tmp_path / "home"))
    out = tmp_path / "recs.csv"
    code = main(["export", "recommendations", "--data", str(small_ml), "--k", "5", "--out", str(out),
                 "--deepwalk-seeds", "1", "--graphsage-seeds", "0"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["users"] == 120 and summary["rows"] == 600 and out.exists()
    code = main(["export", "evaluate", "--recs", str(out), "--test", str(small_ml / "test.tsv"),
                 "--train", str(small_ml / "train.tsv"), "--k", "5"])  # fmt: skip
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < metrics["ndcg@5"] <= 1 and metrics["users"] == 120


def test_bad_input_is_refused(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    with pytest.raises(ValueError, match="not a MovieLens directory|is not a directory"):
        export_recommendations(settings, tmp_path / "nothing", tmp_path / "x.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("u,i\n1,2\n")
    with pytest.raises(ValueError, match="header must be"):
        evaluate_export(bad, tmp_path / "t.tsv", tmp_path / "t.tsv")


def test_cli_export_options_default_to_the_ensemble_config() -> None:
    """Options left out keep ``EnsembleConfig``'s defaults (no second copy of them in the CLI); given ones win."""
    from recstack.models.ensemble import EnsembleConfig
    from recstack.offline.cli import build_parser, export_ensemble

    base = ["export", "recommendations", "--data", "d", "--out", "o.csv"]
    assert export_ensemble(build_parser().parse_args(base)) == EnsembleConfig()
    given = export_ensemble(build_parser().parse_args(
        [*base, "--ease-weight", "0", "--deepwalk-seeds", "5", "--deepwalk-return-p", "1,4"]))  # fmt: skip
    assert given == EnsembleConfig(ease_weight=0.0, deepwalk_seeds=5, deepwalk_return_ps=(1.0, 4.0))
