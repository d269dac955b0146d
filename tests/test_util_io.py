"""edgekd.util_io: atomic writes and the one reader of versioned JSON files."""
from __future__ import annotations

import json
import os

import pytest

from edgekd.errors import BadInputError
from edgekd.util_io import atomic_path, atomic_write_json, read_versioned_json

HINT = "re-create it with `edgekd thing`"


def _read(path, schema="edgekd.thing/v1"):
    return read_versioned_json(path, schema, what="thing file", hint=HINT)


def _error(path, schema="edgekd.thing/v1") -> str:
    with pytest.raises(BadInputError) as info:
        _read(path, schema)
    msg = str(info.value)
    assert str(path) in msg and msg.endswith(HINT) and "\n" not in msg
    assert info.value.exit_code == 2
    return msg


def test_reads_an_object_with_the_schema(tmp_path):
    p = atomic_write_json(tmp_path / "a.json", {"schema": "edgekd.thing/v1", "x": [1, 2]})
    assert _read(p) == {"schema": "edgekd.thing/v1", "x": [1, 2]}
    assert _read(str(p), ("edgekd.thing/v0", "edgekd.thing/v1"))["x"] == [1, 2]


def test_missing_file(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.json")


def test_unreadable_file(tmp_path):
    d = tmp_path / "dir.json"
    d.mkdir()  # exists, but reading it fails
    assert "unreadable" in _error(d)
    b = tmp_path / "bytes.json"
    b.write_bytes(b'{"schema": "\xff\xfe"}')
    assert "unreadable" in _error(b)


def test_bad_json_names_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "schema": "edgekd.thing/v1",\n  "x": [1, 2,]\n}\n')
    msg = _error(p)
    assert "not valid JSON" in msg and "line 3 column" in msg


@pytest.mark.parametrize("doc, found", [
    ({"schema": "edgekd.other/v1"}, "schema 'edgekd.other/v1'"),
    ({"x": 1}, "no schema"),
    ([{"schema": "edgekd.thing/v1"}], "top level is a JSON list"),
])
def test_wrong_schema_names_found_and_expected(tmp_path, doc, found):
    p = tmp_path / "w.json"
    p.write_text(json.dumps(doc))
    msg = _error(p, ("edgekd.thing/v1", "edgekd.thing/v2"))
    assert found in msg and "'edgekd.thing/v1' or 'edgekd.thing/v2'" in msg
    assert "is not an edgekd thing file" in msg


def test_manifest_reader_uses_it(tmp_path):
    from edgekd.manifest import SCHEMA, read_manifest

    p = tmp_path / "manifest.json"
    p.write_text(json.dumps({"schema": "edgekd.profile/v1"}))
    with pytest.raises(BadInputError, match=r"not an edgekd manifest: schema 'edgekd.profile/v1', "
                       r"expected 'edgekd.manifest/v1'.*edgekd compress --force"):
        read_manifest(p)
    p.write_text(json.dumps({"schema": SCHEMA, "artifacts": []}))
    assert read_manifest(p)["artifacts"] == []


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    atomic_write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("boom")
    assert json.loads(dest.read_text()) == {"v": 1}
    assert os.listdir(dest.parent) == ["out.txt"]  # no temporary left behind
