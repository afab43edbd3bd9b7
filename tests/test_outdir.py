"""edgekit deletes only what it wrote: output folders that are the cwd or its parents, or hold the user's files."""
import json

import pytest

from conftest import assert_one_line_error, run_cli


def convert(model, out, *extra, cwd=None):
    return run_cli("convert-for-device", model, "--device", "local", "--recipe", "fp32", "--out", out, *extra,
                   cwd=cwd)


@pytest.mark.parametrize("out", [".", ".."])
def test_current_or_parent_folder_is_refused_and_untouched(digits_model, tmp_path, out):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("mine")
    (tmp_path / "sibling.txt").write_text("also mine")
    assert_one_line_error(convert(digits_model, out, cwd=cwd), "current folder or one of its parents")
    assert (cwd / "notes.txt").read_text() == "mine" and (tmp_path / "sibling.txt").read_text() == "also mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sibling.txt", "work"]  # no '..partial' either


def test_ancestor_of_cwd_is_refused(digits_model, tmp_path):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert_one_line_error(convert(digits_model, tmp_path / "a", cwd=deep), "current folder or one of its parents")
    assert deep.exists()


def test_rerun_keeps_the_users_files_and_replaces_only_edgekits_own(digits_model, digits_data, tmp_path):
    from edgekit import convert_for_device
    out = tmp_path / "o"
    convert_for_device(digits_model, "local", ["fp32", "fp16"], eval=digits_data[1], out=out, log=lambda m: None)
    first = json.loads((out / "manifest.json").read_text())
    assert first["files"] == ["fp16.tflite", "fp32.tflite", "manifest.json"]
    # the user adds their own things next to ours
    (out / "notes.txt").write_text("my notes")
    (out / "plots").mkdir()
    (out / "plots" / "a.png").write_bytes(b"png")
    assert_one_line_error(convert(digits_model, out), "did not write", "notes.txt", "--overwrite")
    assert (out / "fp16.tflite").exists() and (out / "notes.txt").exists()

    proc = convert(digits_model, out, "--overwrite", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (out / "notes.txt").read_text() == "my notes" and (out / "plots" / "a.png").read_bytes() == b"png"
    assert not (out / "fp16.tflite").exists()  # ours, and no longer part of the result
    m = json.loads((out / "manifest.json").read_text())
    assert [v["name"] for v in m["variants"]] == ["fp32"] and m["files"] == ["fp32.tflite", "manifest.json"]
    assert not list(tmp_path.glob(".*partial"))


def test_a_staging_folder_we_did_not_make_is_never_removed(digits_model, tmp_path):
    (tmp_path / ".o.partial").mkdir()
    (tmp_path / ".o.partial" / "keep.txt").write_text("x")
    assert_one_line_error(convert(digits_model, tmp_path / "o"), "not made by edgekit")
    assert (tmp_path / ".o.partial" / "keep.txt").exists()
