"""A stated-preference record's entity tag (`pluralign.user.stated.StatedPreferences.tag`, session versions52): never the
same for two records of a user, though versions start at 1 again after a DELETE; kept by a record's later versions and
by its encoding (what another replica or a restart reads); and, for a record an earlier release wrote (no epoch),
neither that release's `"3"` nor the tag of a record before a DELETE."""

from __future__ import annotations

import re

import msgspec

from pluralign.user.stated import StatedChange, StatedPreferences


def test_each_new_record_draws_its_own_epoch_and_keeps_it_through_its_versions():
    first = StatedPreferences().changed({"length": "less"}, at=1.0)
    again = StatedPreferences().changed({"length": "less"}, at=1.0)  # the same change after a DELETE, at the same time
    assert re.fullmatch(r"[0-9a-f]{16}\.1", first.tag()) and first.tag() != again.tag()
    second = first.changed({"list_items": "more"}, at=2.0)
    assert second.epoch == first.epoch and second.tag() == f"{first.epoch}.2"
    assert first.changed({"length": "less"}, at=3.0) is first  # nothing changed: no new version, the same tag
    assert StatedPreferences.decode(second.encode()).tag() == second.tag()  # what another replica reads
    assert StatedPreferences().tag() == "0" == StatedPreferences(epoch=first.epoch).tag()  # version 0 reads the same


def test_an_earlier_releases_record_has_a_tag_of_its_own_and_an_epoch_from_its_next_version():
    def written_by_release_51(at: float) -> StatedPreferences:  # its encoding: no `epoch`
        record = {"format": 2, "version": 3, "preferences": {"length": "less"},
                  "history": [{"version": 3, "at": at, "feature": "length", "direction": "less"}]}
        return StatedPreferences.decode(msgspec.msgpack.encode(record))

    old = written_by_release_51(1764500000.25)
    assert old.epoch == "" and re.fullmatch(r"[0-9a-f]{16}\.3", old.tag()) and old.tag() == written_by_release_51(1764500000.25).tag()
    assert old.tag() != written_by_release_51(1764500001.5).tag()  # the same version of another record (after a DELETE)
    nxt = old.changed({"length": "more"}, at=1764500002.0)
    assert re.fullmatch(r"[0-9a-f]{16}", nxt.epoch) and nxt.tag() == f"{nxt.epoch}.4"


def test_an_epoch_unfit_for_a_tag_is_not_put_in_one():
    damaged = StatedPreferences(version=2, preferences={"length": "less"}, epoch='a"b',
                                history=[StatedChange(version=2, at=5.0, feature="length", direction="less")])
    assert '"' not in damaged.tag() and damaged.tag().endswith(".2")
    assert re.fullmatch(r"[0-9a-f]{16}", damaged.changed({"length": "more"}, at=6.0).epoch)
