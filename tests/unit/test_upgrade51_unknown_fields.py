"""Every file format the service and the jobs read back takes a field a later release added (session upgrade51).

Replicas of two releases share files during a rolling upgrade, and a rollback starts an older release on what the
newer one wrote. Until this session each of these formats refused a field it did not know, as if the file were
damaged: replicas50's `files` in meta.json made every older replica's start and PAL DELETE fail, a later release's
tenant removal record was ignored (the removal never finished), its job records and audits unreadable. Each test
writes the file with this release's own writer, adds a field as a later release would, and reads it with this
release's own reader (`pluralign.data.record.Persisted`). Kept strict, on purpose, where skipping a field could
weaken what the file guarantees and no schema number could say so: the key file, the feedback log's rows and the
dead letters holding them, its forget notes, and pref-id claims (tested below for the key file and a dead letter)."""

from __future__ import annotations

import msgspec
import pytest
import torch

from pluralign.files import file_digests
from pluralign.reward.em import USERS_FILE, EMConfig, EMMixture
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from pluralign.reward.pal_checkpoint import META_FILE, USER_WEIGHTS_FILE, forget_users
from pluralign.store.dead_letter import DeadLetter, DeadLetters
from pluralign.store.deletions import Applied, new_deletion
from pluralign.store.tables import StoredPreference
from pluralign.user.stated import StatedPreferences
from service.auth import KeyFileError, hash_key, read_key_file
from service.rewards import checkpoint_version
from service.tenants import TenantRemoval, read_removal, removal_path, write_removal
from service.users.journal import DeleteJournal
from training.jobs.promotion import Promotions
from training.jobs.record import Job, decode_job, job_encoder

LATER = {"added_by_a_later_release": {"any": ["value", 1]}}


def with_later_field(path, where=lambda raw: raw) -> None:
    """The JSON file at `path` with a field a later release added (to the object `where` picks in it)."""
    raw = msgspec.json.decode(path.read_bytes())
    where(raw).update(LATER)
    path.write_bytes(msgspec.json.encode(raw))


def digests_anew(folder, names) -> None:
    """meta.json's digests of the files `names` as they are now (the later release wrote them so)."""
    raw = msgspec.json.decode((folder / META_FILE).read_bytes())
    raw["files"] = file_digests(folder, names)
    (folder / META_FILE).write_bytes(msgspec.json.encode(raw))


def pal(folder, users=("acme/ann", "acme/bob")):
    torch.manual_seed(0)
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)),
             UserWeights.from_logits(list(users), torch.randn(len(users), 2)), "enc")
    return folder


def test_a_pal_checkpoint_a_later_release_described_loads_keeps_its_version_and_its_field_through_a_delete(tmp_path):
    folder = pal(tmp_path / "pal")
    version = checkpoint_version(folder)
    with_later_field(folder / META_FILE)
    with_later_field(folder / USER_WEIGHTS_FILE)
    with_later_field(folder / USER_WEIGHTS_FILE, lambda raw: raw["users"]["acme/ann"])
    digests_anew(folder, ("model.safetensors", USER_WEIGHTS_FILE))
    assert load_pal(folder, encoder_id="enc")[1].users() == ["acme/ann", "acme/bob"]  # before: unknown field
    assert checkpoint_version(folder) == version  # before: another version, every user refitted for it
    assert forget_users(folder, lambda user: user == "acme/bob") == 1
    meta = msgspec.json.decode((folder / META_FILE).read_bytes())
    assert meta["added_by_a_later_release"] == LATER["added_by_a_later_release"] and meta["users"] == 1
    weights = msgspec.json.decode((folder / USER_WEIGHTS_FILE).read_bytes())  # the later release's fields kept there too
    assert "added_by_a_later_release" in weights and "added_by_a_later_release" in weights["users"]["acme/ann"]
    assert load_pal(folder, encoder_id="enc")[1].users() == ["acme/ann"]


def test_a_delete_of_this_release_leaves_an_older_form_meta_json_in_the_older_form(tmp_path):
    """A checkpoint written before replicas50 (no `files`), which older replicas still read in a rolling upgrade: a
    DELETE here wrote `"files": {}` into it, and the older replicas' PALMeta (unknown fields forbidden) refused it from
    then on (their starts and their PAL DELETEs failed)."""
    folder = pal(tmp_path / "pal")
    older = {k: v for k, v in msgspec.json.decode((folder / META_FILE).read_bytes()).items() if k != "files"}
    (folder / META_FILE).write_bytes(msgspec.json.encode(older))
    assert forget_users(folder, lambda user: user == "acme/bob") == 1
    meta = msgspec.json.decode((folder / META_FILE).read_bytes())
    assert "files" not in meta and meta["users"] == 1  # before: "files": {}
    assert load_pal(folder, encoder_id="enc")[1].users() == ["acme/ann"]


def test_an_em_mixture_a_later_release_described_loads_and_keeps_its_version(tmp_path):
    torch.manual_seed(0)
    mixture = EMMixture.from_heads(torch.randn(2, 8), torch.log(torch.tensor([0.5, 0.5])), EMConfig(k=2))
    mixture.users = ["acme/ann"]
    mixture.fit_result.responsibilities = torch.full((1, 2), 0.5, dtype=torch.float64)
    folder = mixture.save(tmp_path / "em", "enc")
    version = checkpoint_version(folder)
    line = msgspec.json.decode((folder / USERS_FILE).read_bytes().splitlines()[0])
    (folder / USERS_FILE).write_bytes(msgspec.json.encode({**line, **LATER}) + b"\n")

    with_later_field(folder / META_FILE)
    digests_anew(folder, ("heads.safetensors", USERS_FILE))
    assert EMMixture.load(folder, "enc").users == ["acme/ann"]  # before: unknown field
    assert checkpoint_version(folder) == version


def test_a_job_record_and_a_promotions_file_a_later_release_wrote_are_read(tmp_path):
    job = Job(id="j1", kind="pal", created_at=1.0)
    assert decode_job(msgspec.json.encode({**msgspec.json.decode(job_encoder.encode(job)), **LATER})).id == "j1"
    path = tmp_path / "promotions.json"
    path.write_bytes(msgspec.json.encode({"pal": {"artifact": "a", "heldout_accuracy": 0.7, "job_id": "j1",
                                                  "promoted_at": 1.0, **LATER}}))
    assert Promotions(path).served("pal").job_id == "j1"


def test_a_key_file_with_a_field_this_release_does_not_know_is_still_refused_naming_it(tmp_path):
    """Kept strict on purpose (session upgrade51): the key file has no schema number, and a later release's field there
    may restrict a key (an expiry, a scope) that this release, skipping it, would accept in full. Refused at start,
    naming the file and the field, as before."""
    path = tmp_path / "api_keys.json"
    path.write_bytes(msgspec.json.encode([{"sha256": hash_key("k"), "tenant": "acme", **LATER}]))
    with pytest.raises(KeyFileError, match="added_by_a_later_release"):
        read_key_file(path)


def test_a_stated_record_a_later_release_wrote_is_read():
    stated = StatedPreferences().changed({"length": "more"}, at=1.0)
    raw = msgspec.to_builtins(stated)
    raw["history"][0].update(LATER)
    assert StatedPreferences.decode(msgspec.msgpack.encode({**raw, **LATER})).preferences == {"length": "more"}


def test_a_tenant_removal_record_a_later_release_wrote_is_read_not_passed_over(tmp_path):
    write_removal(tmp_path, TenantRemoval(tenant="acme", state="running", started_at=1.0))
    with_later_field(removal_path(tmp_path, "acme"))
    found = read_removal(tmp_path, "acme")  # before: None (logged as no removal record): the removal never finished
    assert found is not None and found.state == "running"


def test_a_deletes_journal_entry_and_an_applied_file_of_a_later_release_are_read_and_a_dead_letter_is_not(tmp_path):
    journal = DeleteJournal(tmp_path / "journal")
    with_later_field(journal.path("acme", "ann") if journal.begin("acme", "ann", 1.0) else None)
    found = journal.unfinished("acme", "ann")  # before: None, the DELETE begun never finished at the next start
    assert found is not None and found.started_at == 1.0
    applied = tmp_path / "deletions-applied.json"
    Applied().add([new_deletion("acme", "ann", 5.0, 0)]).save(applied)
    with_later_field(applied)
    assert Applied.load(applied).watermark == 5.0
    row = StoredPreference(tenant="acme", user_id="ann", pref_id="p1", prompt="Tea?", chosen="Yes.", rejected="No.",
                           kind="comparison", created_at=1.0, received_at=1.0)
    letter = msgspec.to_builtins(DeadLetter(rows=[row], error="E", tries=1, set_aside_at=1.0))
    letter["rows"][0].update(LATER)
    letters = DeadLetters(tmp_path / "letters")
    (tmp_path / "letters").mkdir()
    name = "a" * 32
    # kept strict on purpose: a dead letter and the feedback rows it holds carry no schema number, and a field added to
    # them changes what is requeued or stored (session 49's `row_numbers`: a letter of some rows, requeued whole by a
    # release skipping it, would store its other rows twice); such a letter stays on disk, unread, as before
    (tmp_path / "letters" / f"{name}.msgpack").write_bytes(msgspec.msgpack.encode({**letter, **LATER}))
    with pytest.raises(msgspec.DecodeError, match="added_by_a_later_release"):
        letters.read(name)
