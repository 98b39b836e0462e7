"""The one reversible encoding of names into subject tokens and KV keys."""

from __future__ import annotations

import random
import re

import pytest

from kernel.subjects import Subjects, decode_token, encode_token

KV_KEY = re.compile(r"^[-/_=\.a-zA-Z0-9]+$")
ODD = [
    "plain",
    "a.b",
    "a b",
    "*",
    ">",
    "=",
    "=3D",
    "x=41",
    "ключ",
    "鍵",
    "🚀",
    "a||b",
    "/",
    "\t\n",
    "..",
    "-_",
]


@pytest.mark.parametrize("name", ODD)
def test_round_trip_and_single_valid_token(name: str) -> None:
    token = encode_token(name)
    assert decode_token(token) == name
    assert KV_KEY.match(token) and "." not in token


def test_safe_names_are_unchanged() -> None:
    assert encode_token("order-1_A") == "order-1_A"


def test_random_unicode_round_trips() -> None:
    rng = random.Random(7)
    for _ in range(500):
        name = "".join(
            chr(rng.choice([rng.randint(32, 126), rng.randint(0x80, 0x2FFF)])) for _ in range(rng.randint(1, 20))
        )
        assert decode_token(encode_token(name)) == name


def test_encoding_is_injective_on_lookalikes() -> None:
    names = ["a=2E", "a.", "a=", "a=3D2E"]
    assert len({encode_token(n) for n in names}) == len(names)


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_token("")


def test_subjects_builder_and_component_of() -> None:
    subjects = Subjects("acme.prod")
    subject = subjects.block("state", "my.store", "get")
    assert subject == "acme.prod.state.my=2Estore.get"
    assert subjects.component_of(subject) == "my.store"
    assert subjects.block_wildcard("state", "get") == "acme.prod.state.*.get"


@pytest.mark.parametrize("root", ["", "a..b", "a b", "a.*", ".a"])
def test_invalid_root_is_refused(root: str) -> None:
    with pytest.raises(ValueError):
        Subjects(root)
