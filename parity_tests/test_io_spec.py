"""The IO spec on its own (no framework, no export): tensor roles, the typed model facts, the task output
table and check_feeds, against values worked out by hand from the configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxport.configs import AutoConfig
from onnxport.errors import InputError
from onnxport.exporters.io_spec import (
    TASKS,
    InputLimits,
    IOSpec,
    TensorSpec,
    build_io_spec,
    empty_past,
    make_inputs,
    past_from_present,
    role_of,
    tensor_name,
)

SIZES = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=37,
             max_position_embeddings=66, num_labels=3)


def config(model_type: str, **changes):
    return AutoConfig.for_model(model_type, **{**SIZES, **changes})


# ----------------------------------------------------------------------------- roles
def test_roles_and_layers_of_a_cache_spec():
    spec = build_io_spec("text-generation", config("xlm-roberta"), with_past=True)
    assert [(t.name, t.role, t.layer) for t in spec.inputs] == [
        ("input_ids", "ids", None), ("attention_mask", "mask", None), ("token_type_ids", "types", None),
        ("past_key_values.0.key", "past_key", 0), ("past_key_values.0.value", "past_value", 0),
        ("past_key_values.1.key", "past_key", 1), ("past_key_values.1.value", "past_value", 1),
    ]
    assert [(t.name, t.role, t.layer) for t in spec.outputs] == [
        ("logits", "output", None),
        ("present.0.key", "present_key", 0), ("present.0.value", "present_value", 0),
        ("present.1.key", "present_key", 1), ("present.1.value", "present_value", 1),
    ]
    assert spec.result_names == ["logits"]
    assert [t.is_cache for t in spec.inputs] == [False] * 3 + [True] * 4


def test_roles_are_derived_when_a_spec_file_is_read():
    """onnxport.json stores names only (its layout is unchanged): reading it gives the roles back."""
    spec = build_io_spec("text-generation", config("roformer"), with_past=True)
    stored = json.loads(spec.to_json())
    assert set(stored["inputs"][0]) == {"name", "dtype", "shape"}  # no new keys for older readers
    again = IOSpec.from_json(spec.to_json())
    assert again == spec
    assert [(t.role, t.layer) for t in again.inputs] == [(t.role, t.layer) for t in spec.inputs]


@pytest.mark.parametrize("name, role, layer", [
    ("input_ids", "ids", None), ("attention_mask", "mask", None), ("token_type_ids", "types", None),
    ("past_key_values.11.value", "past_value", 11), ("present.3.key", "present_key", 3),
    ("logits", "output", None), ("present.x.key", "output", None), ("past_key_values.0.key/fp16", "output", None),
])
def test_role_of_inverts_tensor_name(name, role, layer):
    assert role_of(name) == (role, layer)
    if role != "output":
        assert tensor_name(role, layer) == name


# ----------------------------------------------------------------------------- typed model facts
def test_model_facts_are_typed_fields_with_the_old_extra_layout():
    xlmr = build_io_spec("fill-mask", config("xlm-roberta"))
    # RoBERTa positions start after pad_token_id (1): 66 - 1 - 1 = 64 tokens
    assert (xlmr.pad_token_id, xlmr.vocab_size, xlmr.type_vocab_size, xlmr.max_sequence_length) == (1, 99, 2, 64)
    assert (xlmr.num_attention_heads, xlmr.head_dim) == (4, 8)
    roformer = build_io_spec("fill-mask", config("roformer", type_vocab_size=3))
    assert (roformer.pad_token_id, roformer.type_vocab_size, roformer.max_sequence_length) == (0, 3, 66)
    assert json.loads(xlmr.to_json())["extra"] == {
        "pad_token_id": 1, "vocab_size": 99, "type_vocab_size": 2, "num_attention_heads": 4, "head_dim": 8,
        "max_sequence_length": 64,
    }
    assert xlmr.extra["head_dim"] == 8  # the read-only view callers used before
    with pytest.raises(TypeError):
        xlmr.extra["head_dim"] = 9  # type: ignore[index]


def test_a_spec_file_without_model_facts_reads_as_unrecorded():
    stored = json.loads(build_io_spec("fill-mask", config("xlm-roberta")).to_json())
    del stored["extra"]
    spec = IOSpec.from_dict(stored)
    assert (spec.vocab_size, spec.max_sequence_length, spec.pad_token_id) == (None, None, 0)
    assert dict(spec.extra) == {"pad_token_id": 0}
    feeds = make_inputs(spec, 2, 70)  # nothing recorded: no length limit, ids below 100
    assert feeds["input_ids"].max() < 100
    spec.check_feeds(feeds)


# ----------------------------------------------------------------------------- task outputs
@pytest.mark.parametrize("task, shapes", [
    ("feature-extraction", {"last_hidden_state": ("batch_size", "sequence_length", 32),
                            "pooler_output": ("batch_size", 32)}),
    ("fill-mask", {"logits": ("batch_size", "sequence_length", 99)}),
    ("text-classification", {"logits": ("batch_size", 3)}),
    ("multiple-choice", {"logits": ("batch_size", "num_choices")}),
    ("token-classification", {"logits": ("batch_size", "sequence_length", 3)}),
    ("question-answering", {"start_logits": ("batch_size", "sequence_length"),
                            "end_logits": ("batch_size", "sequence_length")}),
    ("rerank", {"logits": ("batch_size", 3)}),  # a cross-encoder: the sequence classifier's graph
])
def test_task_outputs_come_from_the_table(task, shapes):
    spec = build_io_spec(task, config("xlm-roberta"))
    assert {t.name: t.shape for t in spec.outputs} == shapes
    assert [name for name, _ in TASKS[task].outputs] == list(shapes)


def test_pooler_output_only_where_there_is_a_pooler():
    assert build_io_spec("feature-extraction", config("roformer")).output_names == ["last_hidden_state"]
    assert build_io_spec("feature-extraction", config("xlm-roberta"), pooler=False).output_names == ["last_hidden_state"]


# ----------------------------------------------------------------------------- check_feeds
@pytest.fixture(scope="module")
def cached():
    return build_io_spec("text-generation", config("xlm-roberta"), with_past=True)


def test_check_feeds_accepts_what_make_inputs_and_the_cache_round_trip_give(cached):
    cached.check_feeds(make_inputs(cached, 3, 5, past=4))
    first = make_inputs(cached, 2, 5, past=0)
    first.update(empty_past(cached, 2))
    cached.check_feeds(first)
    # the next step: the cache the graph returned (past 0 + 5 positions) fed back as past
    presents = {name: np.zeros((2, 4, 5, 8), np.float32) for pair in cached.present_names() for name in pair}
    step = {**past_from_present(cached, presents), "input_ids": np.full((2, 1), 5),
            "attention_mask": np.ones((2, 6), np.int64), "token_type_ids": np.zeros((2, 1), np.int64)}
    cached.check_feeds(step)


def _faulty(spec, **changes):
    feeds = make_inputs(spec, 2, 5, past=3 if spec.with_past else 0)
    feeds.update(changes)
    return {k: v for k, v in feeds.items() if v is not None}


@pytest.mark.parametrize("change, message", [
    (dict(token_type_ids=None), r"missing \['token_type_ids'\]"),
    (dict(position_ids=np.zeros((2, 5), np.int64)), r"unknown \['position_ids'\]"),
    (dict(input_ids=np.ones((2, 5), np.float32)), "input_ids must hold integers, got dtype float32"),
    (dict(input_ids=np.ones((5,), np.int64)), r"input_ids must have shape \(batch, sequence\), got \(5,\)"),
    (dict(input_ids=np.ones((2, 0), np.int64)), r"input_ids has shape \(2, 0\)"),
    (dict(input_ids=np.full((2, 5), 99)), r"input_ids must lie in \[0, 98\] \(vocab_size=99\), found values in \[99, 99\]"),
    (dict(input_ids=np.full((2, 5), 2**63 + 5, np.uint64)), r"found values in \[9223372036854775813,"),
    (dict(token_type_ids=np.full((2, 5), 2)), r"token_type_ids must lie in \[0, 1\]"),
    (dict(attention_mask=np.ones((2, 5), np.int64)), r"attention_mask must have shape \(batch, past \+ sequence\) = \(2, 8\)"),
    (dict(**{"past_key_values.1.key": np.zeros((2, 4, 3, 8), "<U1")}), "past_key_values.1.key must hold floating-point"),
    (dict(**{"past_key_values.0.value": np.zeros((2, 4, 2, 8), np.float32)}),
     "past_key_values.0.value holds 2 past positions, the cache before it 3"),
    (dict(**{"past_key_values.0.key": np.zeros((2, 5, 3, 8), np.float32)}),
     r"past_key_values.0.key must have shape \(batch, heads, past, head_dim\) = \(2, 4, None, 8\)"),
])
def test_check_feeds_names_each_fault(cached, change, message):
    with pytest.raises(InputError, match=message):
        cached.check_feeds(_faulty(cached, **change))


def test_check_feeds_length_limit_counts_the_past(cached):
    assert cached.max_sequence_length == 64
    cached.check_feeds(make_inputs(cached, 1, 60, past=4))
    feeds = make_inputs(cached, 1, 60, past=4)
    feeds["input_ids"] = np.full((1, 61), 5)
    feeds["token_type_ids"] = np.zeros((1, 61), np.int64)
    feeds["attention_mask"] = np.ones((1, 65), np.int64)
    with pytest.raises(InputError, match=r"Sequence length 65 \(including past\) exceeds the model's maximum of 64"):
        cached.check_feeds(feeds)


def test_check_feeds_multiple_choice_shapes_and_graph_limits():
    spec = build_io_spec("multiple-choice", config("roformer"))
    feeds = make_inputs(spec, 2, 6, num_choices=3)
    spec.check_feeds(feeds)
    with pytest.raises(InputError, match=r"attention_mask must have the shape of input_ids \(2, 3, 6\), got \(2, 6\)"):
        spec.check_feeds({**feeds, "attention_mask": np.ones((2, 6), np.int64)})
    # limits read off a graph take precedence over the spec's (a table smaller than recorded)
    limits = InputLimits(vocab_size=50, type_vocab_size=2, max_sequence_length=66, max_position_embeddings=66)
    with pytest.raises(InputError, match=r"input_ids must lie in \[0, 49\]"):
        spec.check_feeds({**feeds, "input_ids": np.full((2, 3, 6), 60)}, limits)


def test_check_feeds_takes_zero_token_types_only_where_the_graph_has_none():
    """One rule for the runtime and validation (issue 23): a one-type model's graph has no token_type_ids;
    zeros are what it computes, type 1 does not exist (transformers indexes out of range)."""
    spec = build_io_spec("fill-mask", config("xlm-roberta", type_vocab_size=1))
    assert spec.input("types") is None
    feeds = make_inputs(spec, 2, 5)
    spec.check_feeds(feeds)
    spec.check_feeds({**feeds, "token_type_ids": np.zeros((2, 5), np.int32)})
    ones = np.zeros((2, 5), np.int64)
    ones[1, 3] = 1
    with pytest.raises(InputError, match=r"token_type_ids holds 1, .*one token type \(type_vocab_size=1\)"):
        spec.check_feeds({**feeds, "token_type_ids": ones})
    with pytest.raises(InputError, match="token_type_ids must have the shape of input_ids"):
        spec.check_feeds({**feeds, "token_type_ids": np.zeros((2, 4), np.int64)})
    # an export made before token types were a graph input (two types recorded, none taken)
    old = build_io_spec("fill-mask", config("xlm-roberta", type_vocab_size=2))
    old = IOSpec.from_dict({**old.to_dict(), "inputs": [t.to_dict() for t in old.inputs if t.role != "types"]})
    with pytest.raises(InputError, match="graph was traced with every token type 0.*re-export"):
        old.check_feeds({**feeds, "token_type_ids": ones})


def test_tensor_spec_of_builds_the_name_from_the_role():
    t = TensorSpec.of("present_value", "float16", ("batch_size", 4, "total", 8), layer=5)
    assert (t.name, t.role, t.layer, t.is_cache) == ("present.5.value", "present_value", 5, True)
