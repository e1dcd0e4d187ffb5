from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from recstack.features.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RECSTACK_CONFIG", raising=False)
    s = load_settings(home=tmp_path)
    assert s.spark.master == "local[*]"
    assert s.lake_root == tmp_path / "lake"
    assert s.mlflow_tracking_uri.startswith("sqlite:///") and s.mlflow_tracking_uri.endswith("mlflow.db")
    assert s.redis.url is None and s.bus.url is None


def test_sample_file_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTACK_CONFIG", str(REPO / "docs" / "recstack.example.toml"))
    monkeypatch.setenv("RECSTACK_SPARK__MASTER", "spark://head:7077")
    monkeypatch.setenv("RECSTACK_BUS__URL", "kafka://b1:9092,b2:9092")
    s = load_settings()
    assert s.spark.master == "spark://head:7077"  # env beats the file
    assert s.bus.url == "kafka://b1:9092,b2:9092"
    assert s.serving.recall_size == 300  # from the file
    from recstack.features.settings import default_channels

    assert s.serving.channels == default_channels()  # the sample lists the defaults


def test_channel_list_is_checked() -> None:
    from recstack.features.settings import Settings

    ok = Settings(serving={"channels": [{"name": "a", "kind": "trending", "quota": 5}]})
    assert ok.serving.channels[0].timeout_ms == 30.0 and not ok.serving.channels[0].runs_in_pool(True)
    with pytest.raises(ValidationError, match="duplicate channel names"):
        Settings(serving={"channels": [{"name": "a", "kind": "trending", "quota": 5}] * 2})
    with pytest.raises(ValidationError, match="kind"):
        Settings(serving={"channels": [{"name": "a", "kind": "telepathy", "quota": 5}]})
    with pytest.raises(ValidationError, match="quota"):
        Settings(serving={"channels": [{"name": "a", "kind": "genre", "quota": 0}]})


def test_wrong_config_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSTACK_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError):
        load_settings()
    bad = tmp_path / "bad.toml"
    bad.write_text('[spark]\nshuffle_partitions = "many"\n')
    monkeypatch.setenv("RECSTACK_CONFIG", str(bad))
    with pytest.raises(ValidationError, match="shuffle_partitions"):
        load_settings()
    bad.write_text("[sparkk]\nmaster = 'x'\n")
    with pytest.raises(ValidationError, match="sparkk"):
        load_settings()


def test_production_refuses_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSTACK_CONFIG", raising=False)
    with pytest.raises(ValidationError, match="redis.url"):
        load_settings(environment="production")
