import json

from typer.testing import CliRunner

from breastcad.cli import app

runner = CliRunner()


def test_data_sources_lists_every_adapter():
    result = runner.invoke(app, ["data", "sources"])
    assert result.exit_code == 0
    for name in ("busi", "breastmnist", "mini-mias", "idc", "breakhis", "dicom", "folder"):
        assert name in result.output


def test_data_audit_reports_corrupt_file_by_name(busi_tree, tmp_path):
    out = tmp_path / "audit"
    result = runner.invoke(
        app,
        [
            "data",
            "audit",
            "busi",
            str(busi_tree),
            "--out",
            str(out),
            "--distance",
            "2",
            "--jobs",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "benign (9).png" in result.output and "corrupt or truncated" in result.output
    summary = json.loads((out / "audit.json").read_text())
    assert summary["n_samples"] == 20 and len(summary["unreadable"]) == 1


def test_data_commands_take_the_data_as_options_too(busi_tree, tmp_path):
    """`--dataset` / `--root`, as `train-image` and `evaluate` take them, give the same split."""
    common = ["--out", "SPLIT", "--test-size", "0.25", "--val-size", "0", "--distance", "2"]
    as_args = ["data", "split", "busi", str(busi_tree)]
    as_options = ["data", "split", "--dataset", "busi", "--root", str(busi_tree)]
    files = []
    for i, args in enumerate((as_args, as_options)):
        files.append(tmp_path / f"split{i}.json")
        out = [str(files[-1]) if a == "SPLIT" else a for a in common]
        result = runner.invoke(app, [*args, *out, "--quiet"])
        assert result.exit_code == 0, result.output
    first, second = (json.loads(f.read_text()) for f in files)
    assert first["rows"] == second["rows"] and first["counts"] == second["counts"]
    both = runner.invoke(app, [*as_args, "--root", str(busi_tree)])
    assert both.exit_code == 2 and "name the data once" in both.output
    neither = runner.invoke(app, ["data", "audit", "--quiet"])
    assert neither.exit_code == 2 and "--dataset NAME --root PATH" in neither.output


def test_data_split_writes_leak_free_split(busi_tree, tmp_path):
    out = tmp_path / "split.json"
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            "busi",
            str(busi_tree),
            "--out",
            str(out),
            "--test-size",
            "0.25",
            "--val-size",
            "0",
            "--distance",
            "2",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no group spans two partitions" in result.output
    assert "skipped" in result.output and "benign (9).png" in result.output
    payload = json.loads(out.read_text())
    assert set(payload["counts"]) == {"train", "test"}
    assert not any(p.endswith("benign (9).png") for p in payload["rows"]["path"])
    assert payload["settings"]["duplicate_distance"] == 2


def test_data_commands_give_clear_errors(tmp_path):
    result = runner.invoke(app, ["data", "audit", "nope", str(tmp_path)])
    assert result.exit_code == 2 and "unknown dataset 'nope'" in result.output
    result = runner.invoke(app, ["data", "split", "busi", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output


def test_data_cache_builds_then_reuses_and_names_bad_files(busi_tree, tmp_path):
    args = ["data", "cache", "busi", str(busi_tree), "--size", "32", "--quiet"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--jobs", "1"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "built" in first.output and "19 images" in first.output
    assert "benign (9).png" in first.output  # the truncated file, skipped by name
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "reused" in again.output
    bad = runner.invoke(app, [*args[:-4], "--channels", "2"])
    assert bad.exit_code == 2 and "channels" in bad.output


def test_data_cache_takes_height_x_width(busi_tree, tmp_path):
    args = ["data", "cache", "busi", str(busi_tree), "--quiet", "--jobs", "1"]
    args += ["--cache-dir", str(tmp_path), "--size", "24x16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "[24, 16]" in result.output
    bad = runner.invoke(app, [*args[:-1], "24x16x3"])
    assert bad.exit_code == 2 and "HEIGHTxWIDTH" in bad.output


def test_data_split_keeps_frames_of_one_scene_together_unless_told_not_to(tmp_path):
    """By default two frames of one scene (data without patient ids) share a split group, and
    the split file records the rule; `--correlation none` leaves them to the pHashes (which do
    not pair them); a correlation outside (0, 1] is refused."""
    from tests.data.conftest import blob_image, save, scene_frames

    root = tmp_path / "data"
    scene_frames(root / "benign")
    for seed in range(4):
        save(root / "malignant" / f"m{seed}.png", blob_image(30 + seed, (130, 170)))
    groups = {}
    for name, extra in (("default", []), ("off", ["--correlation", "none"])):
        out = tmp_path / f"{name}.json"
        args = ["data", "split", "folder", str(root), "--out", str(out), "--distance", "0"]
        result = runner.invoke(app, [*args, "--test-size", "0.4", "--val-size", "0", *extra])
        assert result.exit_code == 0, result.output
        saved = json.loads(out.read_text())
        rows = dict(zip(saved["rows"]["path"], saved["rows"]["split_group"], strict=True))
        a, b = (rows[str(root / "benign" / f"{k}.png")] for k in "ab")
        groups[name] = (a == b, saved["settings"])
    assert groups["default"][0] and not groups["off"][0]
    assert groups["default"][1]["duplicate_correlation"] == 0.93
    assert "thumbnails" in groups["default"][1]["duplicate_rule"]
    assert groups["off"][1]["duplicate_correlation"] is None
    bad = runner.invoke(app, ["data", "audit", "folder", str(root), "--correlation", "2"])
    assert bad.exit_code == 2 and "--correlation takes a number" in bad.output


def test_train_image_and_its_config_refuse_a_correlation_outside_zero_to_one(tmp_path):
    import pytest
    from pydantic import ValidationError

    from breastcad.config import ImageDataConfig

    args = ["train-image", "--dataset", "folder", "--root", str(tmp_path), "--model", "probe"]
    result = runner.invoke(app, [*args, "--correlation", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--correlation takes a number" in result.output
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValidationError, match="duplicate_correlation"):
        ImageDataConfig(dataset="busi", root=tmp_path, duplicate_correlation=1.5)
    assert ImageDataConfig(dataset="busi", root=tmp_path).duplicate_correlation == 0.93
