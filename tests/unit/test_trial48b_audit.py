"""What a tenant admin and a fairness auditor found running pluralign on UKPConvArg1 (trial session 48b).

Each test drives the `pluralign audit` command (`main`, in this process) on a real LanceDB store in a temp folder, as
the admin route's audit job runs it, or on a preference file."""

from __future__ import annotations

import json

import numpy as np

from tests.unit.clitools import cli


def _store_with_ties(folder) -> None:
    """A store of two tenants whose users gave 4 comparisons each and ties (UKP's `equal`): acme's 3, globex's 5."""
    from pluralign.store import Store, StoredPreference

    store = Store(str(folder), "enc", 4)
    stored = []
    for tenant, ties in (("acme", 3), ("globex", 5)):
        for u in range(2):
            for i in range(4 + ties):
                tie = i >= 4
                row = {"user_id": f"u{u}", "prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}", "tie": tie,
                       "attributes": {"segment": f"s{u}"}}
                stored.append(StoredPreference(tenant=tenant, user_id=row["user_id"], pref_id=f"p{u}{i}", prompt=row["prompt"],
                                               chosen=row["chosen"], rejected=row["rejected"], kind="comparison", tie=tie,
                                               created_at=float(i), attributes=row["attributes"]))
    vectors = np.random.default_rng(0).standard_normal((len(stored), 4)).astype(np.float32)
    store.add_preferences(stored, vectors, vectors, -vectors)


def test_a_store_audit_counts_the_ties_it_skipped_as_a_file_audit_does(tmp_path, capsys):
    """The admin route's audit (`audit --store`) reported `ties_skipped: 0` however many ties its tenant had stored
    (the store was read without them), while `audit --data` of the same rows counts them (test_fairness): after importing 500 UKP
    rows (83 of them `equal`) the service's report said no tie was skipped. Failed before the fix: 0 == 6."""
    _store_with_ties(tmp_path / "db")
    code, out, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--tenant", "acme", "--group-by", "segment",
                         "--min-comparisons", "0", "--json")
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["comparisons"], report["ties_skipped"]) == (8, 6)  # acme's own: globex's 10 ties are not acme's
    code, out, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "segment", "--min-comparisons", "0", "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["ties_skipped"] == 16  # every tenant's
