"""The shipped zoo is consistent: each card names its weights' hash, so files find their model."""
import json

import pytest

from vlaecodec.zoo import MODELS_DIR, file_sha256, list_models, model_for_beta

CARDS = sorted(MODELS_DIR.glob("*.json"))
WEIGHTED = [c for c in CARDS if c.with_suffix(".safetensors").exists()]


@pytest.mark.parametrize("card", WEIGHTED, ids=lambda c: c.stem)
def test_card_names_the_hash_of_its_weights(card):
    info = json.loads(card.read_text())
    assert info["sha256"] == file_sha256(card.with_suffix(".safetensors"))
    assert info["name"] == card.stem


def test_model_ids_are_unique_so_a_file_finds_one_model():
    ids = [c["sha256"][:16] for c in list_models()]
    assert len(ids) == len(set(ids))


def test_the_default_wins_its_beta():
    assert model_for_beta(1.0) == "default"
