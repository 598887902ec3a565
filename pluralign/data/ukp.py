"""Importer for UKPConvArg1 (Habernal & Gurevych, ACL 2016), read from its original XML.

One record per (worker, argument pair): user_id is the worker's turkID, the prompt is the debate
title and side, chosen/rejected follow the worker's `value` (a1/a2), and `equal` becomes a tie.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from pluralign.data.record import Base, Preference

SOURCE = "ukp_convarg1"


class UkpStats(Base):
    pairs: int
    judgments: int
    users: int
    ties: int
    topics: int


def _xml_dir(path: Path) -> Path:
    nested = path / "UKPConvArg1-full-XML"
    return nested if nested.is_dir() else path


def _text(node: ET.Element | None, tag: str) -> str:
    found = node.find(tag) if node is not None else None
    return (found.text or "").strip() if found is not None and found.text else ""


def prompt_for(title: str, side: str) -> str:
    return f"Debate: {title}\nSide: {side}\nWhich argument for this side is more convincing?"


def load_ukp(path: str | os.PathLike) -> tuple[list[Preference], int]:
    """Return (records, number of argument pairs) of the corpus under `path`: the data set's folder, its
    `UKPConvArg1-full-XML` folder, or one of its `.xml` files (one debate side). Ties are kept with tie=True.
    Raises FileNotFoundError when `path` holds no XML file, and ValueError naming the file (and the line or
    the pair) for a file that is not well-formed XML or a pair that makes no comparison, and naming `path`
    when its XML files hold no argument pair at all (another corpus's XML, which would otherwise
    load as an empty data set, ([], 0))."""
    given = Path(path)
    files = [given] if given.is_file() and given.suffix == ".xml" else sorted(_xml_dir(given).glob("*.xml"))
    if not files:
        raise FileNotFoundError(f"no UKPConvArg1 XML files under {path}")
    records: list[Preference] = []
    pairs = 0
    for file in files:
        # each pair is read at its end tag and then emptied: building every file's whole tree (82 MB of
        # XML, most of it the arguments' original HTML) took 2-3 times as long
        bad_pair: ValueError | None = None  # a malformed file is named first, as when it was parsed whole
        try:
            for _, pair in ET.iterparse(file, events=("end",)):
                if pair.tag != "annotatedArgumentPair":
                    continue
                if bad_pair is None:
                    pairs += 1
                    try:
                        records.extend(_pair_records(pair, file.stem))
                    except ValueError as exc:  # a pair without an argument, a worker without an id, ...
                        bad_pair = ValueError(f"{file}: pair {_text(pair, 'id') or pairs}: {exc}")
                pair.clear()
        except ET.ParseError as exc:  # a SyntaxError, not a ValueError: named here or it is a traceback
            line, column = exc.position
            reason = str(exc).rsplit(": line ", 1)[0]  # expat's "no element found: line 1, column 37"
            raise ValueError(f"{file}: line {line}, column {column}: malformed XML ({reason})") from None
        if bad_pair is not None:
            raise bad_pair
    if not pairs:
        raise ValueError(f"{path}: its {len(files)} XML file(s) hold no UKPConvArg1 argument pair (`annotatedArgumentPair`): "
                         "give the folder of UKPConvArg1-full-XML's files, or one of them")
    return records, pairs


def _pair_records(pair: ET.Element, topic: str) -> list[Preference]:
    """One record per worker who judged the argument pair."""
    pair_id = _text(pair, "id")
    arg1 = _text(pair.find("arg1"), "text")
    arg2 = _text(pair.find("arg2"), "text")
    side = _text(pair.find("arg1"), "stance")
    title = _text(pair.find("debateMetaData"), "title")
    prompt = prompt_for(title, side)
    records = []
    for a in pair.iter("mTurkAssignment"):
        value = _text(a, "value")
        stance = _text(a, "workerStance") or "unknown"
        attributes = {"worker_stance": stance, "pair_id": pair_id, "topic": topic}
        chosen, rejected = (arg2, arg1) if value == "a2" else (arg1, arg2)
        records.append(
            Preference(
                user_id=_text(a, "turkID"),
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                tie=value == "equal",
                source=SOURCE,
                attributes=attributes,
            )
        )
    return records


def ukp_stats(records: list[Preference], pairs: int) -> UkpStats:
    return UkpStats(
        pairs=pairs,
        judgments=len(records),
        users=len({r.user_id for r in records}),
        ties=sum(r.tie for r in records),
        topics=len({r.attributes["topic"] for r in records}),
    )
