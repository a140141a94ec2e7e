"""Recipe resolution: strict validation, overrides, extends, and the messages users see."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from ptl_cli import recipes
from ptl_cli.errors import UserError
from ptl_cli.schema import Params


class Train(Params):
    epochs: int = 1
    lr: float = Field(0.1, gt=0)
    schedule: Literal["cosine", "step"] = "cosine"


class DemoRecipe(recipes.RecipeBase):
    kind: Literal["demo"] = "demo"
    train: Train = Train()


@pytest.fixture
def recipe_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PTL_RECIPE_PATH", str(tmp_path))
    (tmp_path / "base.toml").write_text(
        'kind = "demo"\ndescription = "base"\n[train]\nepochs = 5\nlr = 0.2\n'
    )
    (tmp_path / "child.toml").write_text('extends = "base"\n[train]\nlr = 0.05\n')
    return tmp_path


def test_extends_overrides_and_set(recipe_dir):
    resolved = recipes.resolve("child", DemoRecipe, {"train.epochs": 9}, ["train.lr=0.5", "seed=3"])
    assert resolved.model.train.epochs == 9  # the flag beats the recipe
    assert resolved.model.train.lr == 0.5  # --set beats the flag and the recipe
    assert resolved.model.seed == 3 and resolved.model.name == "child"
    assert resolved.data["train"]["schedule"] == "cosine"  # defaults are filled into what is written


def test_unknown_key_names_key_and_file(recipe_dir):
    (recipe_dir / "typo.toml").write_text('kind = "demo"\n[train]\nepochz = 3\n')
    with pytest.raises(UserError) as err:
        recipes.resolve("typo", DemoRecipe)
    message = str(err.value)
    assert "typo.toml" in message and "`train.epochz`" in message and "did you mean 'epochs'" in message
    assert "\n" not in message


def test_wrong_type(recipe_dir):
    with pytest.raises(UserError, match=r"`train.lr`.*'fast'"):
        recipes.resolve("base", DemoRecipe, sets=["train.lr=fast"])


def test_missing_recipe_file_and_name(recipe_dir):
    with pytest.raises(UserError, match="not found"):
        recipes.resolve(str(recipe_dir / "nope.toml"), DemoRecipe)
    with pytest.raises(UserError, match="did you mean 'base'"):
        recipes.resolve("bsae", DemoRecipe)


def test_set_needs_equals_and_a_key():
    with pytest.raises(UserError, match="expected key.path=value"):
        recipes.parse_set("train.lr")
    with pytest.raises(UserError, match="key is empty"):
        recipes.parse_set("=3")
    assert recipes.parse_set("a.b=[1, 2]") == ("a.b", [1, 2])
    assert recipes.parse_set("a=hello") == ("a", "hello")
    assert recipes.parse_set("a=true") == ("a", True)


def test_invalid_toml_and_cycles(recipe_dir):
    (recipe_dir / "bad.toml").write_text("kind = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        recipes.resolve("bad", DemoRecipe)
    (recipe_dir / "a.toml").write_text('extends = "b"\n')
    (recipe_dir / "b.toml").write_text('extends = "a"\n')
    with pytest.raises(UserError, match="cycle"):
        recipes.resolve("a", DemoRecipe)


def test_set_into_a_value_is_an_error(recipe_dir):
    with pytest.raises(UserError, match="is a value, not a section"):
        recipes.resolve("base", DemoRecipe, sets=["train.epochs.x=1"])


def test_dumps_round_trips(recipe_dir):
    resolved = recipes.resolve("child", DemoRecipe)
    path = recipe_dir / "written.toml"
    path.write_text(recipes.dumps(resolved.data))
    again = recipes.validate(recipes.read_toml(path), DemoRecipe, "written")
    assert again.data == resolved.data


def test_bundled_recipes_all_validate():
    """Every recipe shipped in recipes/ resolves against its workflow's schema."""
    from ptl_cli import plugins

    found = recipes.available()
    assert found, "no bundled recipes"
    for name in found:
        data, path = recipes.load_raw(name)
        spec = plugins.get("workflows", data["kind"])
        recipes.validate(data, spec.params, f"recipe {path}")


def test_errors_name_the_source_of_the_bad_value(recipe_dir):
    (recipe_dir / "typo.toml").write_text('kind = "demo"\n[train]\nepochz = 3\n')
    with pytest.raises(UserError, match=r"^recipe .*typo\.toml: unknown key `train.epochz`"):
        recipes.resolve("typo", DemoRecipe, sets=["train.lr=0.5"])
    with pytest.raises(UserError, match=r"^--set train\.lr=-1: key `train.lr`: Input should be greater"):
        recipes.resolve("base", DemoRecipe, sets=["train.lr=-1"])
    with pytest.raises(UserError, match=r"^command-line value of `train.schedule`: key `train.schedule`"):
        recipes.resolve("base", DemoRecipe, {"train.schedule": "linear"})


def test_validator_messages_are_shown_as_written(recipe_dir):
    from pydantic import field_validator

    class Checked(DemoRecipe):
        @field_validator("seed")
        @classmethod
        def _small(cls, value: int) -> int:
            if value > 10:
                raise ValueError("seeds above 10 are unlucky; pick 0..10")
            return value

    with pytest.raises(UserError) as err:
        recipes.resolve("base", Checked, sets=["seed=11"])
    assert str(err.value) == "--set seed=11: key `seed`: seeds above 10 are unlucky; pick 0..10"
