"""Commands import only what they use: the modules behind `pluralign keys` and `pluralign
serve-embeddings` never import lancedb (2.5 s of every such process on 2 cores, most of it in
lance_namespace's generated client), though both reach `pluralign.store.failures` through the
service's error handling."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_keys_and_serve_embeddings_modules_do_not_import_lancedb():
    """Before: `import service.ids` (keys create) and `service.runtime.make_encoder` (serve-embeddings)
    imported `pluralign.store`, whose package imported its tables and lancedb with them."""
    code = ("import sys, service.ids, service.auth, service.encoders, service.embeddings.app, pluralign.store.failures; "
            "from pluralign.store import deletions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lancedb', 'lance', 'lance_namespace')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout[:500]


def test_the_store_names_still_import_from_the_package():
    """`from pluralign.store import Store, ...` (docs/library.md) loads the tables at first use."""
    import pluralign.store as store
    from pluralign.store import SCHEMA_VERSION, Store, StoredPreference
    from pluralign.store.tables import Store as TablesStore

    assert Store is TablesStore and StoredPreference.__module__ == "pluralign.store.tables" and isinstance(SCHEMA_VERSION, int)
    assert set(store.__all__) <= set(dir(store))


def test_usage_errors_of_the_trainers_and_audit_come_before_torch_is_imported(tmp_path):
    """Before: each of these printed its one line (exit 2) after importing torch and the models' code
    (1.7-3.1 s a run here; `audit --store` with a mistyped folder lancedb too, 3.5 s; tests/unit/test_newuser31_cli.py runs them as subprocesses;
    a bad `--user-groups` file until session speed38). One interpreter
    runs them all through `training.cli.main` and then lists what it imported."""
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(f'{{"user_id": "u{i % 4}", "prompt": "Tea {i}?", "chosen": "Yes.", "rejected": "No.", "attributes": {{"segment": "s"}}}}\n'
                            for i in range(24)))
    groups_twice = tmp_path / "groups.json"
    groups_twice.write_text('{"u0": "a",\n "u0": "b"}')
    argvs = [
        ["train", "fspo", "--population", "file", "--data", str(data), "--groups", "3"],
        ["train", "fspo", "--population", "persona", "--unseen-fraction", "0.5"],
        ["train", "pal", "--protocol", "file", "--data", str(data), "--k", "3", "--k-max", "2"],
        ["train", "em", "--protocol", "file", "--data", str(data), "--k", "3", "--k-max", "2"],
        # --protocol file without --data, --data beside another protocol (`check_protocol_data`; before review eval45,
        # the trainers refused them only once torch was imported: 6-9 s on the loaded two cores, eval's own 0.8 s)
        ["train", "pal", "--protocol", "file"],
        ["train", "em", "--protocol", "persona", "--data", str(data)],
        ["audit", "--data", str(data), "--group-by", "segment", "--groups", "3"],
        ["audit", "--data", str(data), "--group-by", "segment", "--pal", str(tmp_path / "pal")],
        ["audit", "--group-by", "segment", "--store", str(tmp_path / "dta")],  # a mistyped data folder: lancedb not imported either
        # a bad --user-groups file (tests/unit/test_data36_user_groups.py): read before the audit's imports too
        ["audit", "--data", str(data), "--group-by", "g", "--user-groups", str(groups_twice)],
        ["audit", "--data", str(data), "--group-by", "g", "--user-groups", str(tmp_path / "absent.json")],
    ]
    code = ("import sys, contextlib, io; from training.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        assert main(argv + ['--out', sys.argv[1]]) == 2, argv\n"
            "    assert err.getvalue().startswith('pluralign: error: --'), err.getvalue()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'lancedb')))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout[:500]
    assert not (tmp_path / "out").exists()


# tenant acme's 4 users (segments s0, s1; PAL logits each), 6 comparisons each with random vectors, in a store at argv[1]
STORED_COMPARISONS = """
import numpy as np
from pluralign.store import Store, StoredPreference, UserRecord
store = Store(sys.argv[1], "hash", 8, sync_seconds=None)
rows = [StoredPreference(tenant="acme", user_id=f"u{i % 4}", pref_id=f"p{i}", prompt=f"Tea {i}?", chosen=f"Yes {i}.",
                         rejected=f"No {i}.", kind="comparison", created_at=1000.0 + i, attributes={"segment": f"s{i % 2}"})
        for i in range(24)]
store.add_preferences(rows, *np.random.default_rng(0).standard_normal((3, 24, 8)).astype(np.float32))
for u in range(4):
    store.put_user(UserRecord(tenant="acme", user_id=f"u{u}", created_at=1.0, updated_at=1.0, pal_logits=[0.0, float(u % 2)]))
"""


def test_an_audit_of_the_store_imports_no_torch(tmp_path):
    """An audit job's process (`pluralign audit --store`, started for every /admin/audits/fairness) imports the CLI's
    audit command, the store's reader and the audit, reads the store and runs the audit: none of it needs torch.
    Before session 46 the audit's math was torch's: ~1.5 s of CPU of the job's ~2.5 s at each start, for a few small
    matrix products. (Until review suite46 this test ran the audit on synthetic comparisons and never read a store: a
    torch import in `comparisons_from_store` passed it.) The store is written in the same process, first (its
    writer imports what the reader does: lancedb), and is checked to have imported no torch either."""
    code = ("import contextlib, io, json, sys\n" + STORED_COMPARISONS +
            "assert not [m for m in sys.modules if m.split('.')[0] == 'torch'], 'writing the store imported torch'\n"
            "from training.cli import main\n"
            "for group_by in ('segment', 'pal_prototype'):\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        code = main(['audit', '--json', '--store', sys.argv[1], '--tenant', 'acme', '--group-by', group_by])\n"
            "    report = json.loads(out.getvalue())\n"
            "    assert code == 0 and report['comparisons'] == 24 and len(report['groups']) == 2, (group_by, report)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout[:500]
