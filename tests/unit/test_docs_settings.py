"""The settings (`service.settings.Settings`) as the docs give them: every one is named where an operator looks
(docs/api.md, docs/operations.md, docs/admin.md or deploy/README.md, as `PLURALIGN_<NAME>` or the TOML file's
`name`), every `PLURALIGN_*` a doc names is a setting or a variable read elsewhere, and a default any of the docs
states is the code's: a row of api.md's table of limits (`| `max_prompt_tokens` | 1024 | ...`), a variable followed
by its value (`PLURALIGN_CANDIDATES` (4)), or a row of operations.md's table of bounds (`| ... | 256 MiB | `PLURALIGN_STORE_CACHE_MB` |`,
and the code constants that table names). Only plain values are read (a number, `1 MB`, true or false); a derived one
(`<data_dir>/...`, "the model's context", a setting unset by default) is not. Reads text, and imports the modules
whose constants the table names: a few seconds."""

from __future__ import annotations

import importlib
import re

import msgspec

from service.settings import ENV_PREFIX, OTHER_VARIABLES, Settings
from tests.conftest import REPO

NAMED_IN = ("docs/api.md", "docs/operations.md", "docs/admin.md", "deploy/README.md")
DEFAULTS_IN = ("docs/api.md", "docs/operations.md", "docs/admin.md", "deploy/README.md", "README.md")
_UNITS = {None: 1, "KiB": 2**10, "MiB": 2**20, "MB": 10**6, "GB": 10**9}
# a plain value, then what may follow it: `)`, `;`, `,`, `:`, ` (`, or the cell's end
_VALUE = re.compile(r"\s*(?:(?P<number>-?\d{1,3}(?:,\d{3})+|-?\d+(?:\.\d+)?)(?:\s(?P<unit>KiB|MiB|MB|GB))?|(?P<bool>true|false))"
                    r"(?=[);:]|,(?!\d)|\s\(|\s*$)")
_ROW = re.compile(r"^\| `([a-z_0-9]+)` \| ([^|]*) \|", re.M)
_VARIABLE = re.compile(rf"`{ENV_PREFIX}([A-Z0-9_]+)` \(([^)]{{0,200}})")
# a row of operations.md's table of bounds: `| what | 256 MiB (...) | `PLURALIGN_STORE_CACHE_MB` |`, or one naming a
# constant of the code: `| ... | 100,000; ... | `MAX_WAITING_REFITS` in `service/feedback/services.py` |`
_BOUND = re.compile(rf"^\|[^|\n]*\| ([^|\n]*) \| `(?:{ENV_PREFIX}([A-Z0-9_]+)|([A-Z][A-Z0-9_]+)` in `([\w/]+)\.py)` \|$", re.M)
_NAMED = re.compile(rf"(?<![\w$<{{])(?:\$\{{|\$)?{ENV_PREFIX}[A-Z0-9_]*[A-Z0-9]\b(?!\*)")  # not `PLURALIGN_STORE_*`


def _value(text: str):
    """The plain value `text` begins with (a float, or a bool), or None."""
    m = _VALUE.match(text)
    if not m:
        return None
    if m["bool"]:
        return m["bool"] == "true"
    return float(m["number"].replace(",", "")) * _UNITS[m["unit"]]


def stated_defaults() -> list[tuple[str, str, object]]:
    """(where, setting, value) of each plain default DEFAULTS_IN state."""
    fields = set(Settings.__struct_fields__)
    defaults = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    found = []
    for doc in DEFAULTS_IN:
        text = (REPO / doc).read_text()
        for name, cell in _ROW.findall(text):
            if name in fields and (value := _value(cell)) is not None:
                found.append((f"{doc} table", name, value))
        for variable, after in _VARIABLE.findall(text):
            if variable.lower() in fields and (value := _value(after)) is not None:
                found.append((f"{doc} {ENV_PREFIX}{variable}", variable.lower(), value))
        for cell, variable, _, _ in _BOUND.findall(text):  # a setting unset by default (None) has a derived bound
            if variable.lower() in fields and (value := _value(cell)) is not None and defaults[variable.lower()] is not None:
                # `_mb` settings count MiB: 256 MiB is 256
                found.append((f"{doc} bounds", variable.lower(), value / 2**20 if variable.endswith("_MB") else value))
    return found


def test_every_setting_is_named_in_the_docs():
    texts = [(REPO / doc).read_text() for doc in NAMED_IN]
    missing = [name for name in Settings.__struct_fields__
               if not any(f"{ENV_PREFIX}{name.upper()}" in text or f"`{name}`" in text for text in texts)]
    assert not missing, f"settings no doc names: {missing}"


def test_the_defaults_the_docs_state_are_the_code_s():
    defaults = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    stated = stated_defaults()
    assert len(stated) > 40, stated  # the reading still finds the docs' defaults
    wrong = [(where, name, value, defaults[name]) for where, name, value in stated
             if not (value == defaults[name] and isinstance(value, bool) == isinstance(defaults[name], bool))]
    assert not wrong, "\n".join(f"{where}: `{name}` stated {value}, the code's default {code!r}" for where, name, value, code in wrong)


def test_every_variable_the_docs_name_is_a_setting_or_one_read_elsewhere():
    """A `PLURALIGN_*` name in the docs (README.md too) is a setting or one of `OTHER_VARIABLES`: what a start refuses as
    no such variable (`service.settings.check_variables`) is no name a doc may tell an operator to set."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.__struct_fields__} | set(OTHER_VARIABLES)
    unknown = sorted({f"{doc}: {m[0].lstrip('${')}" for doc in (*NAMED_IN, "README.md")
                      for m in _NAMED.finditer((REPO / doc).read_text()) if m[0].lstrip("${") not in known})
    assert not unknown, "variables no setting or reader has:\n" + "\n".join(unknown)


def test_the_code_s_constants_the_bounds_table_names_have_the_stated_values():
    """A row of docs/operations.md's table of bounds that names a constant of the code (`MAX_WAITING_REFITS` in
    `service/feedback/services.py`) states its value: the first number of its bound."""
    rows = [(name, module, _value(re.search(r"-?\d[\d,.]*", cell)[0].rstrip(".,"))) for cell, _, name, module in _BOUND.findall((REPO / "docs/operations.md").read_text()) if name]
    assert len(rows) >= 2, rows
    wrong = [f"{module}.{name}: stated {value}, the code's {getattr(importlib.import_module(module.replace('/', '.')), name)!r}"
             for name, module, value in rows if getattr(importlib.import_module(module.replace("/", ".")), name) != value]
    assert not wrong, "\n".join(wrong)
