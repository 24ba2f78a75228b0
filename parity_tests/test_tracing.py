"""The export tracing context (reference_models/tracing.py): scoped, local, read by the three encoders,
and the only way the exporters change how a reference model traces."""

from __future__ import annotations

import ast
import contextvars
import os
import threading

import numpy as np
import pytest

from onnxport.reference_models.tracing import DEFAULTS, TraceOptions, trace_options, tracing

from conftest import TINY, sample_inputs

EXPORTERS_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "src", "onnxport", "exporters")


# ----------------------------------------------------------------------------- the context itself
def test_defaults_outside_any_block():
    assert trace_options() == DEFAULTS == TraceOptions()
    assert DEFAULTS.rotary_op is None and not DEFAULTS.first_token_only_last_layer and DEFAULTS.graph_input_checks


def test_blocks_nest_and_restore():
    def hook(x, sin, cos):
        return x

    with tracing(rotary_op=hook) as outer:
        assert trace_options() is outer and outer.rotary_op is hook
        with tracing(first_token_only_last_layer=True, graph_input_checks=False) as inner:
            # An inner block changes what it names and keeps the rest of the enclosing options.
            assert inner == TraceOptions(rotary_op=hook, first_token_only_last_layer=True, graph_input_checks=False)
            assert trace_options() is inner
        assert trace_options() is outer
    assert trace_options() == DEFAULTS


def test_restored_when_the_block_raises():
    with pytest.raises(RuntimeError, match="conversion failed"):
        with tracing(first_token_only_last_layer=True):
            with tracing(graph_input_checks=False):
                raise RuntimeError("conversion failed")
    assert trace_options() == DEFAULTS


def test_unknown_option_is_refused():
    with pytest.raises(TypeError):
        with tracing(rotary_hook=None):
            pass
    assert trace_options() == DEFAULTS


def test_local_to_the_thread_that_entered_the_block():
    barrier = threading.Barrier(2, timeout=30)
    seen: dict[str, object] = {}

    def worker(name: str, first_token_only: bool) -> None:
        seen[f"{name} before"] = trace_options()
        with tracing(first_token_only_last_layer=first_token_only):
            barrier.wait()  # both threads are inside their blocks at once
            seen[name] = trace_options().first_token_only_last_layer
            barrier.wait()

    with tracing(graph_input_checks=False):
        threads = [threading.Thread(target=worker, args=(n, v)) for n, v in (("a", True), ("b", False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert trace_options() == TraceOptions(graph_input_checks=False)  # the threads' blocks did not leak here
    # A new thread starts from the defaults, not from the block its creator is in.
    assert seen["a before"] == seen["b before"] == DEFAULTS
    assert seen["a"] is True and seen["b"] is False


def test_local_to_the_context():
    def inside() -> TraceOptions:
        with tracing(first_token_only_last_layer=True):
            return trace_options()

    assert contextvars.copy_context().run(inside).first_token_only_last_layer
    assert trace_options() == DEFAULTS
    with tracing(graph_input_checks=False):
        copied = contextvars.copy_context()  # e.g. an asyncio task created inside the block
    assert copied.run(trace_options) == TraceOptions(graph_input_checks=False)
    assert trace_options() == DEFAULTS


# ----------------------------------------------------------------------------- the encoders read it
def _config(model_type: str):
    from onnxport.configs import AutoConfig

    return AutoConfig.for_model(model_type, **TINY)


def _counting_rotary(calls: list, formula):
    def rotary_op(x, sin, cos):
        calls.append(tuple(x.shape))
        return formula(x, sin, cos)

    return rotary_op


def _check_encoder_reads_the_options(run, formula, make_hook=_counting_rotary):
    """``run()`` -> last_hidden_state (numpy) of a RoFormer base model on sample inputs."""
    full = run()
    calls: list = []
    with tracing(rotary_op=make_hook(calls, formula)):
        hooked = run()
    assert len(calls) == 2 * TINY["num_hidden_layers"]  # queries and keys of every layer
    np.testing.assert_array_equal(hooked, full)  # the hook computes the formula
    with tracing(first_token_only_last_layer=True):
        first = run()
    assert first.shape == (full.shape[0], 1, full.shape[2])  # the last layer computed the first row only
    np.testing.assert_allclose(first[:, 0], full[:, 0], rtol=1e-5, atol=1e-6)
    again = run()
    np.testing.assert_array_equal(again, full)  # nothing left behind by the blocks


def test_pt_encoder_reads_the_options():
    import torch

    from onnxport.reference_models.pt import model_class
    from onnxport.reference_models.pt.encoder import rotate_pairs

    torch.manual_seed(0)
    model = model_class("roformer", "Model")(_config("roformer")).eval()
    inputs = {k: torch.from_numpy(v) for k, v in sample_inputs("roformer").items()}

    def run():
        with torch.no_grad():
            return model(**inputs).last_hidden_state.numpy()

    _check_encoder_reads_the_options(run, rotate_pairs)


def test_tf_encoder_reads_the_options():
    tf = pytest.importorskip("tensorflow")
    from onnxport.reference_models.tf import model_class
    from onnxport.reference_models.tf.encoder import rotate_pairs

    tf.keras.utils.set_random_seed(0)
    model = model_class("roformer", "Model")(_config("roformer"))
    inputs = {k: tf.constant(v) for k, v in sample_inputs("roformer").items()}

    def run():
        return model(**inputs).last_hidden_state.numpy()

    _check_encoder_reads_the_options(run, rotate_pairs)

    def asserts_in_a_fresh_trace() -> int:
        # A fresh tf.function each time: its trace reads the options in force where it is traced.
        traced = tf.function(lambda ids: model(input_ids=ids).last_hidden_state)
        graph = traced.get_concrete_function(tf.TensorSpec([None, None], tf.int64)).graph
        return sum(op.type == "Assert" for op in graph.get_operations())

    assert asserts_in_a_fresh_trace() > 0
    with tracing(graph_input_checks=False):
        assert asserts_in_a_fresh_trace() == 0
    assert asserts_in_a_fresh_trace() > 0


def test_flax_encoder_reads_the_options():
    pytest.importorskip("flax")
    from onnxport.reference_models.flax import model_class
    from onnxport.reference_models.flax.encoder import rotate_pairs

    model = model_class("roformer", "Model")(_config("roformer"), seed=0)
    inputs = sample_inputs("roformer")
    shapes = iter([(3, 9), (3, 8), (3, 7), (3, 6)])  # a new shape per call: each call traces afresh

    def run():
        batch, seq = next(shapes)
        return np.asarray(model(**{k: v[:batch, :seq] for k, v in inputs.items()}).last_hidden_state)

    # The options are read while jit traces, so each call here compiles a new shape; the full-model
    # reference is recomputed at the shape of the call it is compared with.
    calls: list = []
    with tracing(rotary_op=_counting_rotary(calls, rotate_pairs)):
        run()
    assert len(calls) == 2 * TINY["num_hidden_layers"]
    with tracing(first_token_only_last_layer=True):
        first = run()
    assert first.shape == (3, 1, TINY["hidden_size"])
    after = run()
    assert after.shape == (3, 7, TINY["hidden_size"])


def test_flax_compile_inside_a_block_is_not_reused_outside():
    """Same shapes inside and outside a block: the model's jit must key its cache on the options."""
    pytest.importorskip("flax")
    from onnxport.reference_models.flax import model_class

    model = model_class("roformer", "Model")(_config("roformer"), seed=0)
    inputs = sample_inputs("roformer")
    with tracing(first_token_only_last_layer=True):
        assert np.asarray(model(**inputs).last_hidden_state).shape[1] == 1
    assert np.asarray(model(**inputs).last_hidden_state).shape[1] == inputs["input_ids"].shape[1]


# ----------------------------------------------------------------------------- exports leave no trace
def _native(framework: str, checkpoint: str):
    """The checkpoint's reference model in ``framework`` -> a function of numpy inputs giving numpy logits."""
    if framework == "pt":
        import torch

        from onnxport.reference_models.pt import model_class

        model = model_class("roformer", "ForSequenceClassification").from_pretrained(checkpoint).eval()

        def run(inputs):
            with torch.no_grad():
                return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    elif framework == "tf":
        import tensorflow as tf

        from onnxport.reference_models.tf import model_class

        model = model_class("roformer", "ForSequenceClassification").from_pretrained(checkpoint)

        def run(inputs):
            return model(**{k: tf.constant(v) for k, v in inputs.items()}).logits.numpy()
    else:
        from onnxport.reference_models.flax import model_class

        model = model_class("roformer", "ForSequenceClassification").from_pretrained(checkpoint)

        def run(inputs):
            return np.asarray(model(**inputs).logits)
    return run


@pytest.mark.parametrize("framework", ["pt", "tf", "flax"])
def test_eager_outputs_equal_before_and_after_an_export(framework, checkpoint_factory, tmp_path):
    """A RoFormer text-classification export (rotary op and first-token-only last layer in its trace)
    leaves the reference models computing exactly what they computed before."""
    pytest.importorskip({"pt": "torch", "tf": "tf2onnx", "flax": "jax2onnx"}[framework])
    from onnxport.exporters import export

    checkpoint = checkpoint_factory("roformer", "ForSequenceClassification")
    run = _native(framework, checkpoint)
    inputs = sample_inputs("roformer")
    before = run(inputs)
    export(checkpoint, tmp_path / "out", framework=framework, task="text-classification", validate=False)
    assert trace_options() == DEFAULTS
    np.testing.assert_array_equal(run(inputs), before)
    np.testing.assert_array_equal(_native(framework, checkpoint)(inputs), before)  # a model loaded afterwards too


# ----------------------------------------------------------------------------- no exporter patches a model
def attribute_writes_on_reference_models(source: str) -> list[str]:
    """Places in ``source`` that write an attribute of a reference-model module or of a model: assignments
    to ``X.attr`` / ``setattr(X, ...)`` / ``object.__setattr__(X, ...)`` / ``global`` rebinding where ``X``
    is a name imported from ``reference_models``, a name bound to a model (the result of a model class
    call: ``cls(...)``, ``model_class(...)(...)``, ``...from_pretrained(...)``, ``load_reference_model(...)``),
    or a name bound to a part of one (``base = model.base_model``)."""
    tree = ast.parse(source)
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and "reference_models" in node.module:
            imported.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names if "reference_models" in a.name)

    local = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}

    def makes_a_model(value, suspects) -> bool:
        """A model class call, or a call of this file's own code given a model (``_IOWrapper(model)``)."""
        if not isinstance(value, ast.Call):
            return False
        func = ast.unparse(value.func)
        if func == "cls" or "model_class" in func or "reference_model" in func or _root(value.func) in suspects:
            return True
        return func in local and any(_root(a) in suspects for a in (*value.args, *(k.value for k in value.keywords)))

    def bound_names(targets) -> list[str]:
        names = []
        for t in targets:
            names.extend(e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Name))
        return names

    # Each function on its own (a name means different things in different functions), the module too;
    # a parameter is a suspect when some call in the file passes it one.
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    scopes = [tree, *functions.values()]
    nodes = {id(scope): list(_walk_scope(scope)) for scope in scopes}
    suspects = {id(scope): set(imported) for scope in scopes}
    changed = True
    while changed:
        changed = False
        for scope in scopes:
            mine = suspects[id(scope)]
            for node in nodes[id(scope)]:
                new: list[str] = []
                if isinstance(node, ast.Assign) and (makes_a_model(node.value, mine) or _root(node.value) in mine):
                    new = bound_names(node.targets)
                elif isinstance(node, ast.For) and (makes_a_model(node.iter, mine) or _root(node.iter) in mine):
                    new = bound_names([node.target])
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                    callee = functions[node.func.id]
                    params = [a.arg for a in (*callee.args.posonlyargs, *callee.args.args)]
                    passed = [*zip(params, node.args), *((k.arg, k.value) for k in node.keywords)]
                    given = {name for name, arg in passed if name and _root(arg) in mine}
                    if not given <= suspects[id(callee)]:
                        suspects[id(callee)] |= given
                        changed = True
                if not set(new) <= mine:
                    mine.update(new)
                    changed = True

    found = []
    for scope in scopes:
        mine = suspects[id(scope)]
        for node in nodes[id(scope)]:
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                flat = []
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    flat.extend(t.elts if isinstance(t, ast.Tuple) else [t])
                targets = [t for t in flat if isinstance(t, ast.Attribute)]
            elif isinstance(node, ast.Call) and node.args:
                if ast.unparse(node.func) in ("setattr", "object.__setattr__", "delattr"):
                    targets = [node.args[0]]
            elif isinstance(node, ast.Global):
                found.extend(f"line {node.lineno}: global {n}" for n in node.names if n in imported)
            for target in targets:
                if _root(target) in mine:
                    found.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return sorted(set(found), key=lambda place: int(place.split()[1].rstrip(":")))


def _walk_scope(scope):
    """The nodes of ``scope`` without those of the functions defined inside it."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def _root(expr) -> str | None:
    """The name an attribute / subscript chain starts from (``a`` of ``a.b[0].c``)."""
    while isinstance(expr, (ast.Attribute, ast.Subscript)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def test_the_attribute_write_check_finds_the_old_patterns():
    old = """
from ..reference_models.pt import encoder
from ..reference_models.flax import encoder as flax_encoder

def convert(job):
    model = cls(job.config)
    base = model.base_model
    encoder.ROTARY_EXPORT_HOOK = hook
    flax_encoder.apply_rotary = apply_rotary
    base.first_token_only_last_layer = True
    model.base_model.graph_input_checks = False
    setattr(encoder, "FIRST_TOKEN_ONLY_LAST_LAYER", True)
    object.__setattr__(model.encoder, "kernel", tensor)
    init.name = "fine"  # an ONNX proto, not a model
    onnx_model.ir_version = 9
    _switch_on(model)

def _switch_on(native):
    native.base_model.first_token_only_last_layer = True
"""
    assert len(attribute_writes_on_reference_models(old)) == 7


def test_no_exporter_writes_a_reference_model_attribute():
    found = {}
    for name in sorted(os.listdir(EXPORTERS_DIR)):
        if name.endswith(".py"):
            with open(os.path.join(EXPORTERS_DIR, name), encoding="utf-8") as fh:
                writes = attribute_writes_on_reference_models(fh.read())
            if writes:
                found[name] = writes
    assert not found, f"exporters write reference-model attributes (use reference_models.tracing): {found}"
