"""Session rows42: a preference export read for TRL's RewardTrainer. Its collator stacks a `margin` column with
`torch.tensor([example["margin"] for example in examples], dtype=torch.float)` (huggingface/trl,
`trl/trainer/reward_trainer.py`, `DataCollatorForPreference.torch_call`; `margin` is one of the columns its
filter keeps), and the export writes `"margin": null` on every row without one. docs/api.md's recipe
("Training a reward model with TRL on an export") is run here as written, in `datasets`' own process."""

from __future__ import annotations

import re

import pytest
import torch

from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference
from tests.conftest import REPO

RECIPE_TITLE = "**Training a reward model with TRL on an export.**"


def recipe() -> str:
    """The ```python block that follows RECIPE_TITLE in docs/api.md."""
    text = (REPO / "docs" / "api.md").read_text()
    assert RECIPE_TITLE in text, "docs/api.md has no TRL training recipe"
    block = re.search(r"^```python\n(.*?)^```", text[text.index(RECIPE_TITLE):], re.S | re.M)
    assert block is not None, "the recipe has no python block"
    return block[1]


def test_the_docs_trl_recipe_drops_the_null_margins_trls_collator_cannot_stack_and_the_ties(tmp_path, hf):
    """Before: docs/api.md said the export is what TRL reads, and nothing of the margin column: a user passing
    the loaded export to RewardTrainer got `TypeError: must be real number, not NoneType` from the collator."""
    records = [Preference(user_id="alice", prompt=f"Tea {i}?", chosen=f"Green tea {i}.", rejected=f"Black coffee {i}.",
                          margin=2.0 if i == 0 else None, tie=i == 3, created_at=1_700_000_000.0 + i) for i in range(4)]
    path = tmp_path / "alice-prefs.jsonl"
    write_jsonl(records, path)  # the rows the service's export writes (`preference_row`)
    loaded = hf.run("result = datasets.load_dataset('json', data_files=path, split='train', cache_dir=cache).to_list()",
                    path=str(path), cache=str(tmp_path / "hf-cache"))
    loaded = [row["margin"] for row in loaded]
    assert loaded == [2.0, None, None, None]
    with pytest.raises(TypeError):  # what TRL's collator does with a batch of them
        torch.tensor(loaded, dtype=torch.float)
    code = recipe().replace('data_files="alice-prefs.jsonl"', "data_files=path, cache_dir=cache")
    assert "data_files=path" in code, code
    ds = hf.run(code + "\nresult = {'columns': ds.column_names, 'prompts': [row['prompt'] for row in ds.to_list()]}", path=str(path), cache=str(tmp_path / "hf-cache"))
    assert "margin" not in ds["columns"] and {"prompt", "chosen", "rejected"} <= set(ds["columns"]), ds
    assert ds["prompts"] == ["Tea 0?", "Tea 1?", "Tea 2?"]  # the tie left out
