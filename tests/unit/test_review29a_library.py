"""A second, hostile pass over pluralign as a library (docs/library.md): what a researcher does in a
notebook that the first pass let through or refused wrongly. Each test drives the public function
the way the guide does, on tiny tensors or a temp folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.reward.bt import PerUserBT
from pluralign.reward.em import EMConfig, EMMixture
from pluralign.reward.features import PairBatch
from tests.unit.test_library_inputs import pairs


def reindexed(batch: PairBatch, users: list[str]) -> PairBatch:
    """The same pairs of the same people, indexed by another `users` list (another order, or only
    the users that own these pairs): what `embed_pairs(records, encoder)` without `users=` gives."""
    where = {u: i for i, u in enumerate(users)}
    user = torch.tensor([where[batch.users[i]] for i in batch.user.tolist()])
    return PairBatch(batch.prompt, batch.chosen, batch.rejected, user, users, batch.group)


@pytest.mark.parametrize("make", [PerUserBT, lambda: EMMixture(EMConfig(k=2, restarts=1))], ids=["per-user-bt", "em"])
def test_seen_users_are_scored_by_name_whatever_the_batch_s_user_order(make):
    train, test = pairs(0), pairs(1)
    model = make()
    model.fit(train, pairs(2))
    expected = model.prob_seen(test)
    # before: PerUserBT scored u0's pairs with u3's weights, silently; EM refused the batch
    assert np.allclose(model.prob_seen(reindexed(test, list(reversed(test.users)))), expected)
    odd = test.select(np.flatnonzero(test.user.numpy() % 2 == 1))
    assert np.allclose(model.prob_seen(reindexed(odd, ["u3", "u1"])), expected[test.user.numpy() % 2 == 1])
    stranger = PairBatch(test.prompt[:2], test.chosen[:2], test.rejected[:2], torch.tensor([0, 1]), ["u0", "zoe"], ["even", "even"])
    with pytest.raises(ValueError, match=r"'zoe'.*prob_new_users"):
        model.prob_seen(stranger)


def test_em_mixture_loads_on_the_device_asked_for_as_load_pal_does(tmp_path):
    em = EMMixture(EMConfig(k=2, restarts=1))
    em.fit(pairs(0), pairs(1))
    em.save(tmp_path / "em", encoder_id="enc")
    loaded = EMMixture.load(tmp_path / "em", "enc", device="cpu")  # before: TypeError, no `device`
    assert loaded.fit_result.head_weights.device.type == "cpu"
    assert np.allclose(loaded.prob_seen(pairs(2)), em.prob_seen(pairs(2)))
    with pytest.raises(ValueError, match=r"`device` 'gpu' is not a torch device"):
        EMMixture.load(tmp_path / "em", "enc", device="gpu")
    if torch.cuda.device_count() < 8:
        with pytest.raises(ValueError, match=r"`device` 'cuda:7' is not available on this machine"):
            EMMixture.load(tmp_path / "em", "enc", device="cuda:7")


# in the `datasets` process (the `hf` fixture): `io.read_rows` given a `datasets.Dataset`, a DatasetDict and
# a DataFrame of one, as a user's script gives them; `parquet` is pluralign's own export. Each call's records
# (msgspec.to_builtins) and its report's lines, or the error it raised (type name, message)
READ_ROWS = """
import msgspec
from pluralign.data import io


def read(rows):
    try:
        records, report = io.read_rows(rows)
    except Exception as e:
        return {"error": [type(e).__name__, str(e)]}
    return {"records": msgspec.to_builtins(records), "lines": report.lines}


mixed = datasets.Dataset.from_list([rows[0], {**rows[0], "prompt": "q", "tie": None}])
exported = datasets.Dataset.from_parquet(parquet, cache_dir=cache)
result = {"mixed": read(mixed), "exported": read(exported), "pandas": read(exported.to_pandas()),
          "dict": read(datasets.DatasetDict(train=exported))}
"""


def test_a_hugging_face_dataset_loads_in_one_call_as_its_parquet_file_does(tmp_path, hf):
    """A `datasets.Dataset` gives every row every column some row has (null where absent), and
    pluralign's own Parquet export read back by `datasets` has its attributes as key/value pairs:
    before, `row_to_preference` per row (the guide's way) refused both ("field `tie`: Expected
    `bool`, got `null`", "field `attributes`: expected an object of labels"), and there was no
    one call. `datasets` runs in a process of its own (tests/hf_datasets.py): `read_rows` there."""
    from pluralign.data import io
    from pluralign.data.record import Preference

    rows = [{"user_id": "ann", "prompt": "p", "chosen": "yes", "rejected": "no", "tie": True},
            {"user_id": "ann", "prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}]
    io.write_parquet([Preference(user_id="bob", prompt="p", chosen="x", rejected="y", attributes={"group": "g1"})], tmp_path / "e.parquet")
    read = hf.run(READ_ROWS, rows=rows, parquet=str(tmp_path / "e.parquet"), cache=str(tmp_path / "hf"))
    assert [r["tie"] for r in read["mixed"]["records"]] == [True, False] and read["mixed"]["lines"] == [1, 2], read["mixed"]
    (record,) = read["exported"]["records"]
    assert record["attributes"] == {"group": "g1"}, record
    assert read["pandas"] == read["exported"]  # a DataFrame: nulls, not NaN
    error, message = read["dict"]["error"]  # iterating it gives the split names
    assert error == "TypeError" and "one split" in message, read["dict"]
    with pytest.raises(TypeError, match=r"read_preferences"):
        io.read_rows(str(tmp_path / "e.parquet"))
    with pytest.raises(io.PreferenceError, match=r"row 2, field `rejected`"):
        io.read_rows([rows[0], {**rows[0], "rejected": "yes"}])
    assert io.read_rows([rows[0], {**rows[0], "rejected": "yes"}], skip_bad=True)[1].skipped == 1


def test_a_store_opened_with_another_encoder_says_what_it_was_made_for_in_the_library_s_words(tmp_path):
    """Before: "table `preferences` at ... has encoder_id=enc-a, this service expects enc-b; use
    another data folder or migrate it", to a notebook that runs no service."""
    from pluralign.store import Store
    from pluralign.store.tables import StoreError

    Store(str(tmp_path), "enc-a", 8)
    for encoder_id, dim, made, opened in [("enc-b", 8, "encoder_id=enc-a", "encoder_id=enc-b"), ("enc-a", 16, "dim=8", "dim=16")]:
        with pytest.raises(StoreError) as refused:
            Store(str(tmp_path), encoder_id, dim)
        message = str(refused.value)
        assert "service expects" not in message, message
        assert f"was made with {made}, and is opened with {opened} (Store's `{opened.split('=')[0]}`" in message, message
        assert "open it with the encoder that made it" in message, message


def test_user_logits_of_any_kind_go_through_the_one_check_that_names_them():
    """Before: PALModel's own conversion said "could not convert string to float: 'a'" for logits
    that are not numbers, and torch warned on stderr of a read-only array (a pandas Series)."""
    pd = pytest.importorskip("pandas")
    from pluralign.reward.pal import PALModel
    from tests.unit.test_library_inputs import tiny_pal

    model = PALModel(tiny_pal()[0]).eval()
    batch = pairs(0)
    logits = np.array([0.3, -0.3])
    expected = model.preference_prob(logits, batch.prompt, batch.chosen, batch.rejected)
    assert torch.allclose(model.preference_prob(pd.Series(logits), batch.prompt, batch.chosen, batch.rejected), expected)
    for bad in (["a", "b"], {"k": 1}):
        with pytest.raises(ValueError, match=r"^`user_logits` is not"):
            model.preference_prob(bad, batch.prompt, batch.chosen, batch.rejected)


def test_a_file_of_ties_only_is_told_why_no_user_is_left():
    """Before: "no user has 5 or more strict comparisons to train on", for 3 users of 8 rows each."""
    from pluralign.data.record import Preference
    from pluralign.data.splits import file_protocol

    ties = [Preference(user_id=u, prompt=f"q{i}", chosen="a", rejected="b", tie=True) for u in "xyz" for i in range(8)]
    with pytest.raises(ValueError, match=r"no user has 5 or more strict comparisons .*of 24 records, 24 of them ties"):
        file_protocol(ties)


def test_json_lines_written_by_datasets_read_a_null_tie_as_no_tie(tmp_path, hf):
    """`Dataset.to_json` writes `"tie": null` on every row that had none when another row had one;
    before, `read_preferences` (so `pluralign data import` and the import route) refused the file:
    "line 2, field `tie`: Expected `bool`, got `null`"."""
    from pluralign.data.io import read_preferences

    row = {"user_id": "ann", "prompt": "p", "chosen": "yes", "rejected": "no"}
    hf.run("datasets.Dataset.from_list(rows).to_json(path)", rows=[{**row, "tie": True}, {**row, "prompt": "q", "tie": None}],
           path=str(tmp_path / "d.jsonl"))
    assert '"tie":null' in (tmp_path / "d.jsonl").read_text()
    records, _ = read_preferences(tmp_path / "d.jsonl")
    assert [r.tie for r in records] == [True, False]


def test_a_residual_user_model_names_the_answer_features_a_hand_built_batch_lacks():
    """The +residual user models also read named features of each answer, which `embed_pairs` adds
    and a researcher's own PairBatch lacks: before, "AttributeError: 'NoneType' object has no
    attribute 'detach'" after the PAL model had trained."""
    from pluralign.reward.registry import build_model

    model = build_model("pal-a+residual", k=2)
    with pytest.raises(ValueError, match=r"`train.chosen_named` is missing.*embed_pairs"):
        model.fit(pairs(0), pairs(1))
