"""A new user's mistakes at the `pluralign` command line (break session 18): each is a one-line error
naming the option or file and the problem, a non-zero exit, no traceback, and nothing half-written.

Most tests call the CLI's `main` with real files in a temp dir (a process per case would cost seconds
of imports each); one runs the real process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl


def rows(n_users: int = 2, per_user: int = 6) -> list[dict]:
    return [
        {"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
         "attributes": {"segment": f"s{u % 2}"}}
        for u in range(n_users) for i in range(per_user)
    ]






# -- paths the command cannot read or write -------------------------------------------------------


def test_a_folder_given_as_the_preference_file_is_an_error_naming_it(tmp_path, capsys):
    folder = tmp_path / "prefs"
    folder.mkdir()
    code, _, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(folder))
    assert code == 2 and "Traceback" not in err
    assert err.startswith("pluralign: error:") and str(folder) in err and "directory" in err.lower()


def test_export_onto_a_folder_or_under_a_file_is_an_error_naming_the_path(tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", data, "--out", str(folder))
    assert code == 2 and "Traceback" not in err and str(folder) in err and "folder" in err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "p.jsonl"]  # no temp file left
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", data, "--out", f"{data}/x.jsonl")
    assert code == 2 and "Traceback" not in err and data in err


def test_audit_out_onto_a_folder_is_an_error_not_a_traceback(tmp_path, capsys, minilm_cache):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    folder = tmp_path / "report"
    folder.mkdir()
    code, _, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--out", str(folder), "--json", "--cache", minilm_cache)
    assert code == 2 and "Traceback" not in err and str(folder) in err


def test_the_real_process_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.cli", "data", "stats", "--source", "jsonl", "--path", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"pluralign: error: --path {tmp_path}: is a directory, not a file"]  # 25b: names --path


@pytest.fixture
def minilm_cache(tmp_path_factory) -> str:
    """The suite's shared embedding cache file (MiniLM vectors), so audits embed little."""
    return str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")


# -- artifacts: another kind, another version, truncated, a meta.json that lies --------------------

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def tiny_pal(folder, k: int = 2, input_dim: int = 384, encoder_id: str = MINILM_ID):
    import torch

    from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal

    torch.manual_seed(0)
    model = PALModel(PALConfig(k=k, input_dim=input_dim, latent_dim=4, hidden=8))
    save_pal(folder, model, UserWeights.from_logits(["u0", "u1"], torch.zeros(2, k)), encoder_id)
    return folder


def tiny_em(folder, k: int = 2, dim: int = 384, encoder_id: str = MINILM_ID):
    import torch

    from pluralign.reward.em import EMConfig, EMMixture

    model = EMMixture.from_heads(torch.randn(k, 2 * dim), torch.log(torch.full((k,), 1 / k)), EMConfig(k=k))
    model.fit_result.responsibilities = torch.full((2, k), 1 / k, dtype=torch.float64)
    model.users = ["u0", "u1"]
    model.save(folder, encoder_id)
    return folder


def lie(folder, field: str, value) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta[field] = value
    (folder / "meta.json").write_text(json.dumps(meta))


def truncate(path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_pal_checkpoint_is_a_value_error_naming_the_file(tmp_path):
    from pluralign.reward.pal import load_pal

    folder = tiny_pal(tmp_path / "pal")
    truncate(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        load_pal(folder)


@pytest.mark.parametrize(("field", "value", "named"), [("k", 3, "K=3"), ("latent_dim", 8, "latent_dim=8"), ("variant", "b", "variant b")])
def test_a_pal_meta_that_lies_about_the_weights_is_a_value_error(tmp_path, field, value, named):
    from pluralign.reward.pal import load_pal

    folder = tiny_pal(tmp_path / "pal")
    lie(folder, field, value)
    if field == "k":  # the user weights agree with the lie, so the model's weights are what disagree
        import torch

        from pluralign.reward.pal import UserWeights

        UserWeights.from_logits(["u0"], torch.zeros(1, 3)).save(folder / "user_weights.json")
    with pytest.raises(ValueError, match=named) as error:
        load_pal(folder)
    assert "model.safetensors does not match meta.json" in str(error.value)


def test_pal_and_em_artifacts_refuse_each_other_by_kind(tmp_path):
    from pluralign.reward.em import EMMixture
    from pluralign.reward.pal import load_pal

    pal, em = tiny_pal(tmp_path / "pal"), tiny_em(tmp_path / "em")
    with pytest.raises(ValueError, match="holds a 'em-bt-mixture' artifact, not a PAL checkpoint"):
        load_pal(em)
    with pytest.raises(ValueError, match=r"holds a 'PAL checkpoint' artifact, not an EM mixture artifact \(em-bt-mixture\)"):
        EMMixture.load(pal, MINILM_ID)


def test_em_artifact_corruptions_are_value_errors_naming_the_file(tmp_path):
    from pluralign.reward.em import EMMixture

    folder = tiny_em(tmp_path / "em")
    EMMixture.load(folder, MINILM_ID, 384)  # whole, it loads
    heads = (folder / "heads.safetensors").read_bytes()
    truncate(folder / "heads.safetensors")
    with pytest.raises(ValueError, match=r"heads\.safetensors.*truncated"):
        EMMixture.load(folder, MINILM_ID)
    (folder / "heads.safetensors").write_bytes(heads)
    (folder / "meta.json").write_text("{")
    with pytest.raises(ValueError, match=r"meta\.json: not an artifact description"):
        EMMixture.load(folder, MINILM_ID)
    tiny_em(folder)
    with open(folder / "users.jsonl", "a") as f:
        f.write('{"user_id": 3, "cluster": 0, "posterior": [1, 0]}\n')
    with pytest.raises(ValueError, match=r"users\.jsonl, line 3"):
        EMMixture.load(folder, MINILM_ID)


def test_audit_with_a_truncated_pal_checkpoint_is_a_one_line_error(tmp_path, capsys, minilm_cache):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    folder = tiny_pal(tmp_path / "pal")
    truncate(folder / "model.safetensors")
    code, _, err = cli(capsys, "audit", "--data", data, "--group-by", "pal_prototype", "--pal", str(folder), "--json", "--cache", minilm_cache)
    assert code == 2 and "Traceback" not in err and "model.safetensors" in err


# -- where a trainer writes: never over other files, never a half-old artifact ---------------------


@pytest.mark.parametrize("trainer", ["pal", "em"])
def test_train_refuses_an_out_folder_holding_other_files_before_training(tmp_path, capsys, trainer):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "train", trainer, "--protocol", "file", "--data", data, "--k", "2", "--out", str(out), "--cache", str(tmp_path / "c.sqlite"))
    assert code == 2 and "Traceback" not in err
    assert "--out" in err and "notes.txt" in err and "new or empty folder" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and not (tmp_path / "c.sqlite").exists()  # refused before embedding


def test_train_em_refuses_a_pal_checkpoint_as_its_out(tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    pal = tiny_pal(tmp_path / "pal")
    before = {p.name: p.read_bytes() for p in pal.iterdir()}
    code, _, err = cli(capsys, "train", "em", "--protocol", "file", "--data", data, "--k", "2", "--out", str(pal))
    assert code == 2 and "--out" in err and "user_weights.json" in err
    assert {p.name: p.read_bytes() for p in pal.iterdir()} == before


def test_train_pal_refuses_a_file_as_its_out(tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    code, _, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", data, "--out", data)
    assert code == 2 and "Traceback" not in err and f"--out {data}: a file, not a folder" in err


def test_a_pal_checkpoint_written_over_another_is_whole_or_no_checkpoint(tmp_path, monkeypatch):
    import torch

    from pluralign.reward.pal import UserWeights, load_pal, save_pal
    from pluralign.reward.pal_model import PALConfig, PALModel

    folder = tiny_pal(tmp_path / "pal", k=2)
    tiny_pal(folder, k=3)  # an earlier checkpoint of the same kind is replaced
    assert load_pal(folder)[2].k == 3

    def stop(self, path):  # the process dies after the new weights, before the user weights and meta.json
        raise KeyboardInterrupt

    monkeypatch.setattr(UserWeights, "save", stop)
    with pytest.raises(KeyboardInterrupt):
        save_pal(folder, PALModel(PALConfig(k=2, input_dim=384, latent_dim=4, hidden=8)), UserWeights.from_logits(["u0"], torch.zeros(1, 2)), MINILM_ID)
    with pytest.raises(FileNotFoundError, match="no meta.json"):  # not K=3's meta.json over K=2's weights
        load_pal(folder)
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # no temp file left


def test_em_save_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "em").mkdir()
    (tmp_path / "em" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="model.safetensors"):
        tiny_em(tmp_path / "em")
    assert [p.name for p in (tmp_path / "em").iterdir()] == ["model.safetensors"]


# -- numbers: zero, negative, not finite -----------------------------------------------------------


@pytest.mark.parametrize(("argv", "option", "problem"), [
    (["train", "pal", "--protocol", "file", "--epochs", "0"], "--epochs", "expected an integer >= 1, got 0"),
    (["train", "pal", "--protocol", "file", "--epochs", "-3"], "--epochs", "expected an integer >= 1, got -3"),
    (["train", "pal", "--protocol", "file", "--batch-size", "0"], "--batch-size", "expected an integer >= 1, got 0"),
    (["train", "pal", "--protocol", "file", "--lr-shared", "-1"], "--lr-shared", "expected a number > 0, got -1"),
    (["train", "pal", "--protocol", "file", "--latent-dim", "0"], "--latent-dim", "expected an integer >= 1, got 0"),
    (["train", "pal", "--protocol", "file", "--threads", "-1"], "--threads", "expected an integer >= 0, got -1"),
    (["train", "em", "--protocol", "file", "--restarts", "0"], "--restarts", "expected an integer >= 1, got 0"),
    (["train", "em", "--protocol", "file", "--l2", "nan"], "--l2", "expected a finite number, got 'nan'"),
    (["audit", "--group-by", "segment", "--since", "nan"], "--since", "expected a finite number, got 'nan'"),
    (["audit", "--group-by", "segment", "--min-group-size", "-1"], "--min-group-size", "expected an integer >= 1, got -1"),
    (["eval", "--model", "bt", "--protocol", "persona", "--groups", "0"], "--groups", "expected an integer >= 2, got 0"),
    (["train", "adapter", "--user", "alice", "--steps", "0"], "--steps", "expected an integer >= 1, got 0"),
    (["train", "fspo", "--unseen-fraction", "1.5"], "--unseen-fraction", "expected a number < 1, got 1.5"),
])
def test_a_number_out_of_bounds_is_a_usage_error_naming_the_option(tmp_path, capsys, argv, option, problem):
    out = tmp_path / "out"
    extra = ["--data", write_jsonl(tmp_path / "p.jsonl", rows())] if argv[:1] in (["audit"], ["train"]) and argv[1:2] != ["adapter"] and argv[1:2] != ["fspo"] else []
    extra += ["--out", str(out)] if argv[:2] in (["train", "pal"], ["train", "em"], ["train", "fspo"]) else []
    code, _, err = cli(capsys, *argv, *extra)
    assert code == 2 and "Traceback" not in err
    assert f"argument {option}: {problem}" in err
    assert not out.exists()


# -- file formats: told by content on input, by name on output -------------------------------------


def test_a_parquet_file_without_the_parquet_suffix_is_read_as_parquet(tmp_path, capsys, hf):
    hf.run("datasets.Dataset.from_dict(columns).to_parquet(path)",
           columns={"prompt": ["The sky is"], "chosen": [" blue."], "rejected": [" green."]}, path=str(tmp_path / "prefs.pq"))
    code, out, err = cli(capsys, "data", "stats", "--source", "parquet", "--path", str(tmp_path / "prefs.pq"), "--user", "alice", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["pairs"] == 1


def test_export_to_an_unknown_suffix_is_refused_before_writing(tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", data, "--out", str(tmp_path / "prefs.csv"))
    assert code == 2 and "--out" in err and ".csv" in err and not (tmp_path / "prefs.csv").exists()


@pytest.mark.parametrize("artifact", ["pal", "em", "maxmin"])
@pytest.mark.parametrize(("text", "said"), [("[1, 2]", "expected a JSON object"), ('{"kind": ', "truncated")])
def test_a_description_that_is_not_one_is_named_as_a_file_by_every_loader(tmp_path, artifact, text, said):
    """PAL checkpoints, EM mixtures and MaxMin policies read meta.json through one reader (`read_description`). A
    JSON list there (a damaged file) was `<folder> holds no artifact, not an EM mixture artifact` for an EM mixture
    or a MaxMin policy, as if the folder were empty of one; every loader now names the file and what is wrong."""
    from pluralign.policy.maxmin import read_policy_meta
    from pluralign.reward.em import EMMixture
    from pluralign.reward.pal import load_pal

    load = {"pal": load_pal, "em": lambda folder: EMMixture.load(folder, MINILM_ID), "maxmin": read_policy_meta}[artifact]
    (tmp_path / "meta.json").write_text(text)
    noun = "a PAL checkpoint" if artifact == "pal" else "an artifact"
    with pytest.raises(ValueError) as error:
        load(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'meta.json'}: not {noun} description: ") and said in str(error.value), error.value
