"""Leave-one-out consensus on UKPConvArg1: how often a judgment agrees with the majority of the same pair's other
annotators, the accuracy a one-size-fits-all model would have if it predicted each pair's majority of everyone else.

    python -m benchmarks.ukp_consensus --data-dir ../shared/data

Each non-tie judgment (`a1` or `a2`) is predicted by the majority of the other non-tie judgments of its pair: right
1, a tie among them 0.5, wrong 0; a judgment whose pair has no other non-tie judgment is not scored. Reads the XML as
published (no importer), so it checks the importer's figures too. Prints one line.
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET
from pathlib import Path


def consensus(folder: Path) -> tuple[float, int, int]:
    """(leave-one-out majority accuracy, judgments scored, judgments with no other non-tie judgment)."""
    right, scored, alone = 0.0, 0, 0
    for xml in sorted((folder / "UKPConvArg1-full-XML").glob("*.xml")):
        for pair in ET.parse(xml).getroot().iter("annotatedArgumentPair"):
            values = [a.findtext("value") for a in pair.iter("mTurkAssignment")]
            votes = collections.Counter(v for v in values if v in ("a1", "a2"))
            for v in values:
                if v not in ("a1", "a2"):
                    continue
                mine, theirs = votes[v] - 1, votes["a2" if v == "a1" else "a1"]
                if mine + theirs == 0:
                    alone += 1
                    continue
                scored += 1
                right += 1.0 if mine > theirs else 0.5 if mine == theirs else 0.0
    return right / scored, scored, alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    accuracy, scored, alone = consensus(Path(args.data_dir) / "ukp_convarg1")
    print(f"leave-one-out majority accuracy {accuracy:.4f} over {scored:,} judgments ({alone} with no other non-tie judgment: not scored)")


if __name__ == "__main__":
    main()
