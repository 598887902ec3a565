"""A CLI option's refused tenant or user id is echoed as the service echoes a client's value
(`pluralign.data.text.shown`): cut between grapheme clusters, with `...` where it was cut. Before,
`training.common.tenant_name` and `user_id` cut it at 64 code points (`[:64]`): inside an emoji's ZWJ
sequence, leaving a dangling joiner in the usage message, and with no sign that it was cut."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import regex

from pluralign.data.record import TENANT_RULE, USER_ID_RULE
from tests.conftest import REPO

FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # one grapheme cluster, five code points


@pytest.mark.parametrize(("argv", "option", "rule"), [
    (["keys", "--data-dir", "{out}", "create"], "--tenant", TENANT_RULE),
    (["data", "export", "--source", "jsonl", "--path", "{out}/none.jsonl", "--out", "{out}/x.jsonl"], "--user", USER_ID_RULE),
])
def test_a_long_refused_tenant_or_user_is_echoed_cut_between_graphemes(tmp_path, argv, option, rule):
    sent = "x" + FAMILY * 30  # 151 code points: over the 128 a tenant or user id may have
    run = subprocess.run([sys.executable, "-m", "training.cli", *(a.format(out=tmp_path / "out") for a in argv), option, sent],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    echoed = run.stderr.split(f"argument {option}: ", 1)[1].split(f": {rule}", 1)[0]
    shown = ast.literal_eval(echoed)
    assert shown.endswith("..."), shown  # it says it was cut
    head = shown.removesuffix("...")
    clusters = regex.findall(r"\X", sent)
    assert sent.startswith(head) and regex.findall(r"\X", head) == clusters[: len(regex.findall(r"\X", head))], head
    assert not (tmp_path / "out").exists()  # nothing written
