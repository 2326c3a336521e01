"""Typed configs: wrong types and impossible values are one UserError naming every field, before any work."""

import pytest

from nextchar.config import PRESETS, ModelConfig, TrainConfig, load
from nextchar.errors import UserError


@pytest.mark.parametrize("cls,values,needle", [
    (TrainConfig, {"batch_size": "8"}, "batch_size must be a whole number, not str '8'"),
    (TrainConfig, {"eval_positions": 2.5}, "eval_positions must be a whole number, not float 2.5"),
    (TrainConfig, {"eval_positions": 0}, "eval_positions must be >= 1"),
    (TrainConfig, {"max_steps": True}, "max_steps must be a whole number, not bool"),
    (TrainConfig, {"compile": 1}, "compile must be true or false, not int 1"),
    (TrainConfig, {"final_eval_positions": -1}, "final_eval_positions must be >= 0"),
    (ModelConfig, {"n_layers": "4", "context": None}, "n_layers must be a whole number, not str '4'; context"),
    (ModelConfig, {"dropout": "0.1"}, "dropout must be a number, not str"),
])
def test_wrong_types_and_values_are_named(cls, values, needle):
    with pytest.raises(UserError) as e:
        cls(**values)
    assert needle in str(e.value)


def test_numbers_of_the_declared_kind_pass():
    assert TrainConfig(lr=1, max_minutes=3, compile=None, final_eval_positions=0).lr == 1  # an int is a float
    assert ModelConfig(dropout=0).dropout == 0
    for name in PRESETS:
        load(name)
    with pytest.raises(UserError, match="batch_size must be a whole number"):
        load("tiny", overrides=['train.batch_size="8"'])
