"""Small library input checks a researcher's trial (trial47b) noticed and left alone (session small47b): each
argument that cannot mean what it claims is refused naming it, on tiny data, before anything is computed."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import numpy as np
import pytest
import torch

from pluralign.data.record import Preference

ROW = dict(user_id="ann", prompt="p", chosen="c", rejected="r")


@pytest.mark.parametrize("created_at", [-5, -0.5, 1e300, 1.7e12, float("nan"), float("inf")])
def test_a_preference_refuses_a_created_at_that_is_no_unix_time_in_seconds(created_at, tmp_path):
    # before: -5, 1e300 and 1.7e12 (milliseconds) were kept, and write_jsonl wrote a file read_jsonl refuses
    with pytest.raises(ValueError, match=r"`created_at` must be a Unix time in seconds"):
        Preference(**ROW, created_at=created_at)


def test_a_preference_keeps_a_time_a_file_takes_and_a_same_answer_tie(tmp_path):
    from pluralign.data.io import read_preferences, write_jsonl

    records = [Preference(**ROW, created_at=0), Preference(**ROW, created_at=1.7e9), Preference(**ROW, created_at=253402300799.0)]
    write_jsonl(records, tmp_path / "p.jsonl")
    assert [r.created_at for r in read_preferences(tmp_path / "p.jsonl")[0]] == [0, 1.7e9, 253402300799.0]
    assert Preference(**{**ROW, "rejected": "c"}, tie=True, created_at=1.7e9).rejected == "c"  # UKP's same-argument tie


def _stored(**changes):
    from pluralign.store import StoredPreference

    return StoredPreference(**{**dict(tenant="default", user_id="ann", pref_id="p0", prompt="q", chosen="c", rejected="r",
                                      kind="comparison", created_at=1.7e9), **changes})


def test_the_store_refuses_no_encoder_and_rows_of_no_user(tmp_path):
    from pluralign.store import Interaction, Store, StoreError, UserRecord

    for encoder_id in ("", "  ", None):
        with pytest.raises(StoreError, match=r"`encoder_id` must name the encoder"):
            Store(str(tmp_path / "none"), encoder_id=encoder_id, dim=4)  # before: a store whose vectors name no encoder
    store = Store(str(tmp_path / "lance"), encoder_id="e", dim=4)
    vectors = (np.ones((1, 4), np.float32),) * 3
    for field in ("user_id", "tenant"):
        with pytest.raises(StoreError, match=rf"`{field}` of row 0 \(pref_id 'p0'\) must not be empty"):
            store.add_preferences([_stored(**{field: ""})], *vectors)  # before: stored, a row no user owns
    with pytest.raises(StoreError, match=r"`user_id` must not be empty"):
        store.put_user(UserRecord(tenant="default", user_id=" ", created_at=1.0, updated_at=1.0))
    with pytest.raises(StoreError, match=r"`user_id` must not be empty"):
        store.add_interaction(Interaction(tenant="default", user_id="", response_id="r", created_at=1.0, prompt="q", messages=[],
                                          candidates=["a"], scores=[0.0], chosen_index=0, history=[], model="m"))
    with pytest.raises(StoreError, match=r"`tenant` must not be empty"):
        store.add_stated_changes("", "ann", [{"version": 1, "at": 1.0, "feature": "f", "direction": 1}])
    assert store.add_preferences([_stored()], *vectors) == 1
    assert [p.user_id for p in store.preferences_for("default", "ann")[0]] == ["ann"]


def test_fairness_metrics_refuse_a_table_of_probabilities_for_one_column():
    from pluralign.evaluation import group_accuracy
    from pluralign.fairness.metrics import credit, expected_calibration_error

    p = np.array([[0.6, 0.4], [0.5, 0.9]])
    # credit is per element: the table keeps its shape (before: flattened to (4,))
    assert credit(p).tolist() == [[1.0, 0.0], [0.5, 1.0]]
    assert credit([0.6, 0.5]).tolist() == [1.0, 0.5] and credit(0.7).tolist() == [1.0]
    with pytest.raises(ValueError, match=r"`p` must be one probability per comparison, \(N,\), got shape \(2, 2\)"):
        expected_calibration_error(p)  # before: one ECE of the four, as if one column
    with pytest.raises(ValueError, match=r"`correct` must be one credit per comparison, \(N,\), got shape \(2, 2\)"):
        group_accuracy(credit(p), ["a", "a", "b", "b"])  # before: the rows' credits read in turn against the labels
    assert group_accuracy(credit(p[0]), ["a", "b"]) == ({"a": 1.0, "b": 0.0}, {"a": 1, "b": 1})


def test_cluster_points_names_max_clusters_and_points_that_are_no_finite_table():
    from pluralign.reward.pal_preference import cluster_points

    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"cluster_points: `max_clusters` must be a whole number >= 1"):
            cluster_points(points, max_clusters=bad)  # before: 0 gave one cluster, as 1 does
    nan = points.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`points` row 2 is not finite"):
        cluster_points(nan, max_clusters=2)  # before: sklearn's "Input X contains NaN"
    with pytest.raises(ValueError, match=r"`points` must be \(N, d\) numbers, got shape \(4,\)"):
        cluster_points(points[:, 0], max_clusters=2)
    assert cluster_points(points, max_clusters=2).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    assert cluster_points(points, max_clusters=1).tolist() == [0, 0, 0, 0]


def test_splits_refuse_counts_and_seeds_that_are_no_whole_numbers():
    from pluralign.data.splits import file_protocol, split_unseen

    records = [Preference(**{**ROW, "prompt": f"p{i}"}) for i in range(6)]
    with pytest.raises(ValueError, match=r"split_unseen: `min_query` must be a whole number >= 0, got 1.5"):
        split_unseen({"ann": records}, seed=0, min_query=1.5)  # before: taken, 1.5 pairs a query set
    with pytest.raises(ValueError, match=r"file_protocol: `seed` must be a whole number >= 0, got 1.5"):
        file_protocol(records, seed=1.5)  # before: a split seeded by the text "1.5"
    assert len(split_unseen({"ann": records}, seed=0, min_query=2).query["ann"]) == 2
    assert len(file_protocol(records, seed=np.int64(3)).seen.test) == 1


def test_ideal_points_of_one_user_s_logits_are_that_user_s_row():
    from pluralign.reward.pal import PALConfig, PALModel

    # documented (K,) for one user, as reward and preference_prob take it; passed before too (documentation)
    torch.manual_seed(0)
    for variant in ("a", "b"):
        model = PALModel(PALConfig(variant=variant, k=2, input_dim=8, latent_dim=4, hidden=8))
        logits, prompt = torch.tensor([0.3, -0.2]), torch.randn(3, 8)
        one = model.ideal_points(logits, None if variant == "a" else prompt)
        rows = model.ideal_points(logits.expand(3, -1), None if variant == "a" else prompt)
        torch.testing.assert_close(one, rows[0] if variant == "a" else rows)


def test_save_pal_records_a_0d_tensor_metric_and_refuses_other_tensors(tmp_path):
    from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal

    model = PALModel(PALConfig(k=2, input_dim=8, latent_dim=4, hidden=8))
    weights = UserWeights.from_logits(["ann"], [[0.0, 1.0]])
    metrics = {"val_acc": torch.tensor(0.75), "epoch": np.int64(3), "val_loss": np.array(0.5), "test_acc": float("nan"),
               "missing": None, "note": "text"}  # left out, as before (test_trial47b_library)
    save_pal(tmp_path / "pal", model, weights, "e", metrics)
    # before: val_acc and val_loss silently left out
    assert json.loads((tmp_path / "pal" / "meta.json").read_text())["metrics"] == {"val_acc": 0.75, "epoch": 3.0, "val_loss": 0.5}
    for bad, shown in ((torch.tensor([0.75, 0.5]), r"Tensor of shape \(2,\)"), (np.zeros((1, 1)), r"ndarray of shape \(1, 1\)"),
                       (torch.tensor(1 + 2j), r"Tensor of shape \(\) holding \(1\+2j\)")):
        with pytest.raises(ValueError, match=rf"`metrics\['val_acc'\]` must be a real number \(or a 0-d tensor or array of one\).*{shown}"):
            save_pal(tmp_path / "pal2", model, weights, "e", {"val_acc": bad})
        assert not (tmp_path / "pal2" / "meta.json").exists()


class _Statement(msgspec.Struct):
    statement: str
    answer_matching_behavior: str
    label_confidence: float = 1.0


def test_a_persona_trait_file_of_one_answer_is_named_not_test_fraction(tmp_path):
    from pluralign.data.persona import PersonaConfig, build_persona

    folder = tmp_path / "anthropic_persona" / "persona"
    folder.mkdir(parents=True)
    for trait, answers in (("yes-only", [" Yes"] * 6), ("one-no", [" Yes"] * 6 + [" No"])):
        lines = [msgspec.json.encode(_Statement(f"I am {trait} {i}.", a)) for i, a in enumerate(answers)]
        (folder / f"{trait}.jsonl").write_bytes(b"\n".join(lines))
    config = PersonaConfig(groups=2, traits=("yes-only",), users_per_group=1, unseen_users_per_group=1, comparisons_per_user=10)
    # before: "PersonaConfig.test_fraction 0.3 holds out 0 of trait 'yes-only''s 0 statements answered ' No'"
    with pytest.raises(ValueError, match=r"yes-only\.jsonl holds 0 statements answered ' No' \(of 6\): .*two at least") as caught:
        build_persona(config, tmp_path)
    assert "test_fraction" not in str(caught.value)
    with pytest.raises(ValueError, match=r"one-no\.jsonl holds 1 statement answered ' No' \(of 7\)"):
        build_persona(dataclasses.replace(config, traits=("one-no",)), tmp_path)
