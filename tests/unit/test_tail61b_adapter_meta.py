"""An adapter description whose field holds a value of another type is refused naming the file and the field in words
(`pluralign.policy.adapters.read_meta`), read directly: the CLI's run of it on a trained FSPO adapter
(tests/models/policy/test_break21b_out.py, `a field of another type`) trains one first and is slow (`make test-artifacts`);
the CLI's wording of a damaged description stays in the default suite there (`description cut short`)."""

from __future__ import annotations

import pytest

from pluralign.policy.adapters import META_FILE, AdapterError, AdapterMeta, read_meta, write_meta


def test_a_description_whose_field_is_of_another_type_names_the_file_and_the_field(tmp_path):
    write_meta(tmp_path, AdapterMeta(kind="fspo", base_model="tiny", shots=1, data_version="d"))
    path = tmp_path / META_FILE
    assert read_meta(tmp_path).shots == 1
    text = path.read_text()
    assert text.count('"shots": 1') == 1, text
    path.write_text(text.replace('"shots": 1', '"shots": "one"'))
    with pytest.raises(AdapterError) as raised:
        read_meta(tmp_path)
    assert str(raised.value) == f"{path}: not an adapter description: `shots`: must be an integer, not text"
