import pytest
import yaml

from edgekit.errors import ConfigError
from edgekit.profiles import (check_recipe_fits, load_profile, load_profiles, load_recipe, load_recipes,
                              profile_names, recipe_names)
from conftest import assert_one_line_error, run_cli

REQUIRED = {"rpi4", "rpi5", "jetson-orin-nano", "jetson-nano", "coral-usb", "coral-devboard", "local"}


def test_all_required_profiles_load_and_their_defaults_fit():
    assert set(profile_names()) >= REQUIRED
    recipes = set(recipe_names())
    for p in load_profiles():
        assert p.threads and p.runtimes and p.default_recipes
        for r in p.default_recipes:
            assert r in recipes, (p.name, r)
            check_recipe_fits(load_recipe(r), p)


def test_recipes_pick_the_collaborative_schemes():
    by = {r.name: r for r in load_recipes()}
    assert by["pcqat-int8"].qat_scheme == "PCQAT"
    assert by["pqat-int8"].qat_scheme == "PQAT"
    assert by["cqat-int8"].qat_scheme == "CQAT"
    assert by["pruned24-int8"].prune.structure == "2:4"
    assert by["int8-edgetpu"].post == ("edgetpu_compile",)


def test_profile_typo_names_file_key_and_allowed(tmp_path):
    data = yaml.safe_load(_path("device_profiles", "rpi4").read_text())
    data["threds"] = data.pop("threads")
    bad = tmp_path / "rpi4.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_profile(str(bad))
    msg = str(e.value)
    assert "rpi4.yaml" in msg and "'threds'" in msg and "allowed:" in msg and "threads" in msg
    assert "missing required key 'threads'" in msg


def test_recipe_bad_value_lists_allowed(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ndescription: x\nquantization: {mode: int4}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: 'quantization.mode' has 'int4'; allowed: float32"):
        load_recipe(str(bad))


def test_channel_multiple_must_be_a_tile_or_auto(tmp_path):
    data = yaml.safe_load(_path("device_profiles", "rpi4").read_text())
    assert load_profile("rpi4").channel_multiple == 8 and load_profile("local").channel_multiple == "auto"
    data["channel_multiple"] = "fast"
    bad = tmp_path / "rpi4.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"rpi4.yaml: 'channel_multiple' must be a positive integer or 'auto'"):
        load_profile(str(bad))
    recipe = tmp_path / "f.yaml"
    recipe.write_text("name: f\ndescription: x\noptimize:\n  prune: {structure: filters, channel_multiple: 0}\n"
                      "quantization: {mode: int8}\n")
    with pytest.raises(ConfigError, match=r"f.yaml: 'optimize.prune.channel_multiple' must be a positive integer"):
        load_recipe(str(recipe))


def test_unknown_profile_suggests_close_name():
    with pytest.raises(ConfigError, match=r"unknown device profile 'rpi-4'.*did you mean 'rpi4'"):
        load_profile("rpi-4")


def test_recipe_the_profile_cannot_run():
    with pytest.raises(ConfigError, match=r"recipe 'fp32' cannot run on device 'coral-usb'"):
        check_recipe_fits(load_recipe("fp32"), load_profile("coral-usb"))


def test_devices_cli_json_and_table():
    import json
    proc = run_cli("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {d["name"] for d in json.loads(proc.stdout)}
    assert names >= REQUIRED
    proc = run_cli("devices")
    assert "coral-usb" in proc.stdout and "tflite-runtime 2.14.0" in proc.stdout


def test_unknown_device_cli_is_one_line_exit_2(tmp_path):
    proc = run_cli("convert-for-device", tmp_path / "m.keras", "--device", "nosuchboard")
    assert_one_line_error(proc, "unknown device profile 'nosuchboard'")


def _path(folder, name):
    from conftest import REPO
    return REPO / folder / f"{name}.yaml"


def test_every_default_recipe_converts_to_a_model_the_devices_own_runtime_loads(digits_model, digits_data):
    """A device's defaults must not build what its first runtime cannot load (rpi4's tflite-runtime 2.14 and the
    converter's FULLY_CONNECTED v12 in dynamic-range models was such a default).  Op versions follow the quantization
    mode, so each mode a default recipe ends in is converted once, by the real converter, from the digits model."""
    from edgekit.compat import runtime_problem
    from edgekit.convert.tflite import convert
    from edgekit.data import load_data
    from edgekit.flatbuffer import parse_model
    from edgekit.modelio import load_keras_model
    model, calibration = load_keras_model(digits_model), load_data(digits_data[0])
    converted: dict = {}
    checked = []
    for p in load_profiles():
        for name in p.default_recipes:
            recipe = load_recipe(name)
            key = (recipe.mode, recipe.io)
            if key not in converted:
                converted[key] = parse_model(convert(model, key[0], key[1], calibration=calibration), name)
            assert runtime_problem(converted[key], p.runtime) is None, (p.name, name)
            checked.append((p.name, name))
    assert ("rpi4", "int8") in checked and ("coral-usb", "int8-edgetpu") in checked
