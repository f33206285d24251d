"""Export options as typed configuration: one dataclass per int8 recipe, validated once, before anything loads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sentictl.cli import cli
from sentictl.errors import SentictlError
from sentictl.export import ExportOptionError, ExportOptions, RowwiseInt8, TensorInt8, int8_config, run_export
from sentictl.variantlist import parse_variant_list


def test_each_recipe_has_its_own_defaults():
    assert int8_config() == RowwiseInt8() == RowwiseInt8(("MatMul", "Gather"), (), 0.5, "auto")
    assert int8_config("tensor") == TensorInt8(("MatMul",), (0,), "auto")
    assert int8_config("rowwise", smooth=0.3, fp32_layers=[11, 0, 0]) == RowwiseInt8(smooth=0.3, fp32_layers=(0, 11))
    assert int8_config("tensor", quantize_ops=[" MatMul", "Gather"], isa="avx2").quantize_ops == ("MatMul", "Gather")


def test_an_option_the_recipe_does_not_have_is_refused_naming_both():
    with pytest.raises(ExportOptionError) as err:
        int8_config("tensor", smooth=0.3)
    assert "--smooth" in str(err.value) and "--int8-recipe tensor" in str(err.value)
    assert err.value.options == ("smooth", "recipe")
    with pytest.raises(TypeError):
        TensorInt8(smooth=0.3)  # type: ignore[call-arg]  (the dataclass has no such field either)


@pytest.mark.parametrize(
    "bad, words",
    [
        (lambda: int8_config("blocky"), "unknown int8 recipe"),
        (lambda: RowwiseInt8(quantize_ops=("MatMul", "Attention")), "not Attention"),
        (lambda: RowwiseInt8(quantize_ops=()), "names no operator"),
        (lambda: RowwiseInt8(smooth=1.5), "between 0 and 1"),
        (lambda: RowwiseInt8(fp32_layers=(-1,)), "start at 0"),
        (lambda: TensorInt8(isa="sse2"), "unknown int8 target"),
        (lambda: ExportOptions(opset=12), "--opset 13 or later"),
    ],
)
def test_invalid_values_are_refused_on_construction(bad, words):
    with pytest.raises(ExportOptionError, match=words):
        bad()


def test_rowwise_opset_check_only_when_int8_is_built():
    assert ExportOptions(opset=12, variants="fp32").wanted == ("fp32",)
    assert ExportOptions(opset=12, int8=TensorInt8()).opset == 12


def test_variants_and_keep_are_parsed_once():
    opts = ExportOptions(variants="coreml,FP16", keep="fp16")
    assert opts.wanted == ("fp32", "fp16", "coreml") and opts.kept == ("fp16",)
    assert ExportOptions().wanted == ("fp32", "int8") == ExportOptions().kept
    assert ExportOptions(variants="all").wanted == ("fp32", "int8", "fp16", "coreml")
    with pytest.raises(SentictlError, match="builds no variant bf16"):
        ExportOptions(variants="int8,bf16")
    with pytest.raises(SentictlError, match="--keep"):
        ExportOptions(variants="int8", keep="fp16")


def test_manifest_form_is_the_config_as_given():
    assert RowwiseInt8(smooth=0.0).to_manifest() == {
        "recipe": "rowwise",
        "quantize_ops": ["MatMul", "Gather"],
        "fp32_layers": [],
        "smooth": 0.0,
        "isa": "auto",
    }
    assert TensorInt8(fp32_layers=()).to_manifest() == {
        "recipe": "tensor",
        "quantize_ops": ["MatMul"],
        "fp32_layers": [],
        "isa": "auto",
    }


def test_run_export_takes_no_unknown_keyword(tmp_path):
    with pytest.raises(TypeError):
        run_export("ckpt", out=tmp_path / "x", smooth_alpha=0.3)  # the old loose keyword: never silently dropped
    with pytest.raises(TypeError):
        run_export(ExportOptions(), out=tmp_path / "x")


@pytest.mark.parametrize(
    "args, env, words",
    [
        (["--int8-recipe", "tensor", "--smooth", "0.3"], {}, ["--smooth", "--int8-recipe tensor"]),
        (["--int8-recipe", "tensor"], {"SENTICTL_EXPORT_SMOOTH": "0"}, ["--smooth", "SENTICTL_EXPORT_SMOOTH"]),
        (["--quantize-ops", "MatMul,Attention"], {}, ["not Attention", "--int8-recipe tensor"]),
        (["--opset", "12"], {}, ["--opset 13"]),
    ],
)
def test_cli_combinations_that_do_not_apply_are_usage_errors(tmp_path, args, env, words):
    out = tmp_path / "never"
    result = CliRunner().invoke(cli, ["export", "--model", str(tmp_path / "absent"), "--out", str(out), *args], env=env)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_one_variant_list_parser():
    have = ["fp32", "int8"]
    assert parse_variant_list(None, have) == have == parse_variant_list(" ALL ", have)
    assert parse_variant_list("int8, INT8,fp32", have) == ["int8", "fp32"]
    assert parse_variant_list("auto", have, keywords={"auto": ["int8"]}) == ["int8"]
    with pytest.raises(SentictlError, match=r"this model has no variant fp16 \(choose from all, fp32, int8\)"):
        parse_variant_list("fp16", have)
    with pytest.raises(SentictlError, match="no variant"):
        parse_variant_list(" , ", have)


def test_manifests_written_before_the_config_was_recorded_still_load():
    """The bundled model's manifest predates quantization.config: the engine reads it as before."""
    import json

    from sentictl import config
    from sentictl.engine.model import load

    folder = config.bundled_model_dir()
    quantization = json.loads((folder / "manifest.json").read_text())["variants"]["int8"]["quantization"]
    assert "config" not in quantization
    model = load(folder, quiet=True, provider="cpu", variant="int8", threads=1)
    assert model.variant == "int8"
