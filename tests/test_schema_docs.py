"""Every recipe field says what it means: the generated recipe reference (docs/generate.py) prints
each field's `description` from the schema, so a field added without one would show up blank."""

from __future__ import annotations


def test_every_recipe_field_has_a_description():
    from driver.recipe import Recipe

    schema = Recipe.model_json_schema()
    missing = [f"{section}.{field}"
               for section, definition in [("Recipe", schema), *schema.get("$defs", {}).items()]
               for field, spec in definition.get("properties", {}).items()
               if field != "kind" and not str(spec.get("description", "")).strip()]
    assert not missing, f"recipe fields without a description (add Field(..., description=...)): {missing}"
