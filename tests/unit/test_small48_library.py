"""Small things session 47's closing note left (session small48): a clustering seed sklearn would refuse late, a store
an earlier release made under the encoder id '', and PLURALIGN_GENERATOR= read as the working folder."""

from __future__ import annotations

import numpy as np
import pytest

POINTS = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, 2**32])
def test_cluster_points_names_a_seed_kmeans_cannot_take(seed):
    from pluralign.reward.pal_preference import cluster_points

    # before: sklearn's "The 'random_state' parameter of KMeans must be an int in the range [0, 4294967295] ...", and for
    # fewer than 3 points (no k-means run) the seed was not looked at: one cluster, whatever it was
    for points in (POINTS, POINTS[:2]):
        with pytest.raises(ValueError, match=rf"cluster_points: `seed` must be a whole number in \[0, 2\*\*32 - 1\], got {seed!r}"):
            cluster_points(points, max_clusters=2, seed=seed)
    assert cluster_points(POINTS, max_clusters=2, seed=2**32 - 1).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    assert cluster_points(POINTS, max_clusters=2, seed=np.int64(7)).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])


def test_a_pal_config_refuses_a_seed_its_user_clusters_cannot_take():
    from pluralign.reward.pal_train import PALTrainConfig

    # before: taken, the model trained, and `PALPreference.user_clusters` then failed inside sklearn
    with pytest.raises(ValueError, match=r"PALTrainConfig: `seed` must be a whole number in \[0, 2\*\*32 - 1\], got 4294967296"):
        PALTrainConfig(seed=2**32)
    assert PALTrainConfig(seed=2**32 - 1).seed == 2**32 - 1


def test_an_em_config_refuses_seeds_its_k_means_restarts_cannot_take():
    from pluralign.reward.em import EMConfig

    # restart r seeds k-means with seed + r: before, taken, and the fit failed inside sklearn after the per-user fits
    for seed, restarts in ((2**32, 1), (2**32 - 3, 4)):
        with pytest.raises(ValueError, match=r"EMConfig: `seed` \+ `restarts` - 1 must be at most 2\*\*32 - 1"):
            EMConfig(seed=seed, restarts=restarts)
    assert EMConfig(seed=2**32 - 4, restarts=4).seed == 2**32 - 4
    assert EMConfig(seed=2**40, init="random").seed == 2**40  # numpy's default_rng takes any seed: no k-means to seed


def _made_before_session_47(uri: str) -> None:
    """Tables as `Store(uri, encoder_id='', dim=4)` left them before session small47b refused that id (their schema
    metadata records encoder_id ''), with one row stored."""
    import lancedb

    from pluralign.store import Store, StoredPreference

    store = Store(uri, encoder_id="made-then", dim=4)
    row = StoredPreference(tenant="default", user_id="ann", pref_id="p0", prompt="q", chosen="c", rejected="r",
                           kind="comparison", created_at=1.7e9)
    store.add_preferences([row], *(np.ones((1, 4), np.float32),) * 3)
    db = lancedb.connect(uri)
    for name in db.list_tables().tables:
        table = db.open_table(name)
        if (table.schema.metadata or {}).get(b"encoder_id") is not None:
            table.to_lance().update_schema_metadata({"encoder_id": ""})


def _encoder_ids(uri: str) -> set[str]:
    import lancedb

    db = lancedb.connect(uri)
    tables = [db.open_table(name) for name in ("preferences", "interactions", "users", "stated_changes")]
    return {t.schema.metadata[b"encoder_id"].decode() for t in tables}


def test_a_store_made_under_the_encoder_id_nothing_opens_with_the_encoder_named(tmp_path):
    from pluralign.store import Store, StoreError

    uri = str(tmp_path / "lancedb")
    _made_before_session_47(uri)
    assert _encoder_ids(uri) == {""}
    # a process that only reads it (`pluralign train adapter --store`) opens it and writes nothing
    reader = Store(uri, encoder_id="minilm", dim=4, finish_purges=False)
    assert [p.pref_id for p in reader.preferences_for("default", "ann")[0]] == ["p0"]
    assert _encoder_ids(uri) == {""}
    # before: refused: "was made with encoder_id=missing, and is opened with encoder_id=minilm ...: open it with the
    # encoder that made it" (and the id it was made with, '', is refused since small47b): no way in
    store = Store(uri, encoder_id="minilm", dim=4)
    assert [p.pref_id for p in store.preferences_for("default", "ann")[0]] == ["p0"]
    assert _encoder_ids(uri) == {"minilm"}  # recorded: the next open with another encoder is refused as any other
    with pytest.raises(StoreError, match=r"was made with encoder_id=minilm, and is opened with encoder_id=other"):
        Store(uri, encoder_id="other", dim=4)
    with pytest.raises(StoreError, match=r"was made with dim=4, and is opened with dim=8"):  # the width is still checked
        _made_before_session_47(str(tmp_path / "again"))
        Store(str(tmp_path / "again"), encoder_id="minilm", dim=8)


def test_an_emptied_generator_setting_is_named_not_read_as_the_working_folder(tmp_path, monkeypatch):
    from service.runtime import make_generator
    from service.settings import Settings

    monkeypatch.chdir(tmp_path)  # pathlib reads "" as the working folder: before, a folder, loaded as a model
    settings = Settings.load({"PLURALIGN_GENERATOR": "", "PLURALIGN_DATA_DIR": str(tmp_path / "data")})
    said = r"^PLURALIGN_GENERATOR \(setting generator\): expected `smollm2`, a model folder or `openai:URL`, got ''$"
    with pytest.raises(ValueError, match=said):
        settings.check_models()  # `pluralign serve`, before anything loads
    for own_process in (False, True):
        with pytest.raises(ValueError, match=said):
            make_generator("", own_process=own_process)  # Runtime.build's
