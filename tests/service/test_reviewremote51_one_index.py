"""Review of session remote51's clock row written as a start has its population model (`service.runtime.claim_index`):
two replicas first started together on one empty PLURALIGN_PAL_DIR, the second's start check straddling the moment
the first finished bootstrapping the model there and wrote its row (real LanceDB in a temp dir, the tiny PAL model)."""

from __future__ import annotations

import shutil

from pluralign.store import Store
from service.runtime import claim_index, refuse_a_model_of_its_own
from service.settings import Settings
from tests.service.tiny import minilm, tiny_pal_dir  # noqa: F401


def test_a_start_whose_check_straddles_the_others_bootstrap_and_row_is_not_refused(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Replica 1 looks at the shared PLURALIGN_PAL_DIR (empty: replica 0 is bootstrapping it), then at the clock rows;
    between the two looks replica 0 finishes the model and, since remote51, writes its row at once (`claim_index`).
    Before this review replica 1 was refused then (`refuse_a_model_of_its_own`: "holds no population model, while
    replica 0 ran"), its start stopped with exit 2 though the folder held the model both would serve, the start together
    the docs promise. Now the folder is looked at again once another replica's row is seen: it starts."""
    pal = tmp_path / "shared-pal"
    pal.mkdir()  # mounted, empty: the first start bootstraps it
    store = Store(str(tmp_path / "shared-lancedb"), minilm.encoder_id, minilm.dim, sync_seconds=0.2)
    first, second = (Settings(data_dir=str(tmp_path / f"replica{i}"), store_uri=str(tmp_path / "shared-lancedb"), replicas=2,
                              replica_index=i, pal_dir=str(pal)) for i in (0, 1))
    read = store.recent_clock_rows

    def rows_once_replica_0_finished(within_s: float) -> list[dict]:
        if not any(pal.iterdir()):  # replica 0's bootstrap ends here, and its start writes its row
            shutil.copytree(tiny_pal_dir, pal, dirs_exist_ok=True)
            claim_index(store, first)
        return read(within_s)

    store.recent_clock_rows = rows_once_replica_0_finished
    refuse_a_model_of_its_own(second, store)  # before: ReplicasDisagree naming PLURALIGN_PAL_DIR
    assert [r["replica"] for r in read(60)] == [0]  # replica 0's row was seen
