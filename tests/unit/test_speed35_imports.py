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
