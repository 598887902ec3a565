"""`benchmarks/tenant_stall.py --lock-deletes 0` (no in-process DELETEs timed: straight to the HTTP blocks)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import tenant_stall


class Started(Exception):
    """Raised in place of starting `pluralign serve`: the in-process part is over."""


@pytest.mark.parametrize("lock_deletes, said", [("0", "in-process DELETEs: none timed (--lock-deletes 0)"),
                                                ("1", "in-process DELETE (ms, 1 DELETEs): median ")])
def test_lock_deletes_0_goes_on_to_the_server(monkeypatch, tmp_path, capsys, lock_deletes, said):
    """Before: `--lock-deletes 0` crashed after the prefill, `statistics.StatisticsError: no median for empty data`
    (the median of no DELETEs' times), and its JSON line at the end would have too."""
    monkeypatch.setattr(tenant_stall.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    monkeypatch.setattr(tenant_stall, "start_server", lambda *a, **k: (_ for _ in ()).throw(Started()))
    monkeypatch.setattr(sys, "argv", ["tenant_stall.py", "--b-users", "1", "--b-rows", "2", "--a-users", "1", "--a-rows", "2",
                                      "--lock-deletes", lock_deletes])
    with pytest.raises(Started):
        tenant_stall.main()
    assert said in capsys.readouterr().out
    assert tenant_stall.in_process_summary([]) == {}


@pytest.mark.parametrize("lock_deletes, said", [("-1", "argument --lock-deletes: expected an integer >= 0, got -1"),
                                                ("two", "argument --lock-deletes: expected an integer, got 'two'")])
def test_lock_deletes_below_0_or_no_number_is_refused_before_anything_runs(monkeypatch, tmp_path, capsys, lock_deletes, said):
    """Review of small47a: the option takes the CLI's own `training.common.number` (it had a copy of its own, whose name
    argparse put in the error: "argument --lock-deletes: invalid count value: 'two'"). Nothing is prefilled."""
    monkeypatch.setattr(tenant_stall.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["tenant_stall.py", "--lock-deletes", lock_deletes])
    with pytest.raises(SystemExit) as stopped:
        tenant_stall.main()
    assert stopped.value.code == 2 and said in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
