"""Dapr component YAML loading, defaults and the errors a bad file gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.components import Component, load_components
from kernel.errors import NatriumError

STATE_YAML = """
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: orders
spec:
  type: state.nats-kv
  version: v1
  metadata:
  - name: keyPrefix
    value: name
  - name: replicas
    value: 1
  - name: actorStateStore
    value: true
scopes: [checkout]
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: sub
spec:
  topic: t
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_loads_components_and_keeps_other_resources(tmp_path: Path) -> None:
    loaded = load_components(write(tmp_path, "state.yaml", STATE_YAML))
    [orders] = loaded.for_block("state", Component(name="statestore", type="state.nats-kv"))
    assert orders.name == "orders" and orders.scopes == ("checkout",)
    assert orders.meta("KEYPREFIX") == "name"
    assert orders.meta_int("replicas", 3) == 1
    assert orders.meta_bool("actorStateStore") is True
    assert loaded.resources[0]["kind"] == "Subscription"


def test_default_component_when_folder_declares_none(tmp_path: Path) -> None:
    default = Component(name="statestore", type="state.nats-kv")
    assert load_components(None).for_block("state", default) == [default]
    assert load_components(tmp_path).for_block("state", default) == [default]


@pytest.mark.parametrize(
    "text, why",
    [
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("apiVersion: v9\nkind: Component\nmetadata: {name: x}\nspec: {type: state.x}\n", "apiVersion"),
        (
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {}\nspec: {type: state.x}\n",
            "metadata.name",
        ),
        ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\nspec: {}\n", "spec.type"),
        (
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: 'a b'}\nspec: {type: state.x}\n",
            "component name",
        ),
        (
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\nspec:\n  type: state.x\n"
            "  metadata:\n  - name: password\n    secretKeyRef: {key: k}\n",
            "secretKeyRef needs a name",
        ),
    ],
)
def test_bad_files_get_a_clear_error_naming_the_file(tmp_path: Path, text: str, why: str) -> None:
    write(tmp_path, "bad.yaml", text)
    with pytest.raises(NatriumError) as err:
        load_components(tmp_path)
    assert err.value.code == "ERR_COMPONENT_INVALID"
    assert "bad.yaml" in err.value.message and why in err.value.message


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", STATE_YAML)
    write(tmp_path, "b.yml", STATE_YAML)
    with pytest.raises(NatriumError, match="already defined"):
        load_components(tmp_path)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NatriumError, match="does not exist"):
        load_components(tmp_path / "nope")


def test_non_integer_metadata_is_reported() -> None:
    component = Component(name="x", type="state.nats-kv", metadata={"replicas": "three"})
    with pytest.raises(NatriumError, match="replicas must be an integer"):
        component.meta_int("replicas", 1)
