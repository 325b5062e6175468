"""GRACE and WISE plumbing on tiny random models (fast; the real-model checks are in tests/integration).

What is checked: the adaptors never touch a weight, are found again by later
edits, take back exactly their own share when a handle is restored (last
first; out of order is a clear error), leave the module tree and the logits bit
for bit as they were once the last edit is restored, follow GRACE's codebook
rules, route WISE by real tokens only, and refuse bad settings with one clear
error each.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.methods import EditContext, MethodConfigError, get_method
from keditlab.methods.adaptors import AdaptorOrderError
from keditlab.methods.grace import GraceCodebook, GraceConfig, Grace
from keditlab.methods.layers import adaptor_layer
from keditlab.methods.wise import WiseConfig, ties_merge
from keditlab.models import derive_profile
from keditlab.spec.types import EditCase
from tests.conftest import make_tiny_model, tiny_with_embedded_vocab as _tiny

FIRST = EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome", case_id="eiffel")
SECOND = EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin Wall", case_id="colosseum")
FAST = {"grace": {"steps": 3}, "wise": {"steps": 3, "unrelated": 2}}



def _logits(model, tokenizer):
    ids = torch.tensor([tokenizer(FIRST.prompt + " Rome")["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def _tree(model):
    return [(name, type(module).__name__, len(module._forward_hooks), len(module._forward_pre_hooks)) for name, module in model.named_modules()]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["grace", "wise"])
def test_stream_adds_a_memory_and_restoring_it_gives_back_the_model_bit_for_bit(model_type, method, tokenizer):
    model = _tiny(model_type)
    profile = derive_profile(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    tree, logits = _tree(model), _logits(model, tokenizer)
    context = EditContext()
    first = get_method(method).apply(model, tokenizer, profile, [FIRST], {**FAST[method], "layer": 1}, context)
    host = model.get_submodule(profile.mlp_out_module(1))
    adaptor = getattr(host, method)
    assert adaptor.layer == 1 and len(adaptor.undo_stack) == 1
    assert not torch.equal(_logits(model, tokenizer), logits), "the edit wrote nothing"
    second = get_method(method).apply(model, tokenizer, profile, [SECOND], {**FAST[method], "layer": 1}, context)
    assert getattr(host, method) is adaptor and len(adaptor.undo_stack) == 2   # found again, extended
    assert first.changed_parameters == second.changed_parameters == []
    assert all(torch.equal(p.detach(), weights[n]) for n, p in model.named_parameters()), "a weight was changed"
    if method == "grace":
        assert len(adaptor) >= 1 + 2   # one entry per target token at least for distinct keys (splits may add)

    with pytest.raises(AdaptorOrderError, match="restore edits last-first"):
        first.restore()
    second.restore()
    assert getattr(host, method) is adaptor and len(adaptor.undo_stack) == 1
    first.restore()
    assert not hasattr(host, method)
    assert _tree(model) == tree
    assert torch.equal(_logits(model, tokenizer), logits)
    assert all(p.requires_grad for p in model.parameters()), "requires_grad flags must be put back"


def test_restoring_the_last_edit_takes_back_exactly_its_share(tokenizer):
    model = _tiny()
    profile = derive_profile(model)
    get_method("grace").apply(model, tokenizer, profile, [FIRST], {"steps": 3, "layer": 1})
    codebook = model.get_submodule(profile.mlp_out_module(1)).grace
    saved = (codebook.keys.clone(), codebook.values.clone(), codebook.radii.clone(), list(codebook.labels))
    with get_method("grace").apply(model, tokenizer, profile, [SECOND], {"steps": 3, "layer": 1}):
        assert len(codebook) > len(saved[3])
    assert torch.equal(codebook.keys, saved[0]) and torch.equal(codebook.values, saved[1])
    assert torch.equal(codebook.radii, saved[2]) and codebook.labels == saved[3]

    get_method("wise").apply(model, tokenizer, profile, [FIRST], {**FAST["wise"], "layer": 1})
    memory = model.get_submodule(profile.mlp_out_module(1)).wise
    before = memory.change().clone(), memory.threshold
    with get_method("wise").apply(model, tokenizer, profile, [SECOND], {**FAST["wise"], "layer": 1}):
        assert not torch.equal(memory.change(), before[0])
    assert torch.equal(memory.change(), before[0]) and memory.threshold == before[1]


def test_grace_codebook_rules():
    """Far: a new entry; near with the same answer: the ball widens; with another: both split; same key: overwritten."""
    codebook = GraceCodebook(0, 4, 2, torch.device("cpu"))
    config = GraceConfig(radius=0.5)

    def place(key, label, changed=None):
        key = torch.tensor(key)
        return Grace._place(codebook, key, torch.zeros(2), label, Grace._new_radius(key, None, config), {} if changed is None else changed)

    assert place([10.0, 0, 0, 0], "a")[:2] == (0, "added")            # radius 5
    assert place([0, 0, 0, 20.0], "b")[:2] == (1, "added")            # 22.4 > 5 + 10
    assert place([16.0, 0, 0, 0], "a")[:2] == (0, "expanded") and float(codebook.radii[0]) == 6.0
    assert place([14.0, 0, 0, 0], "a")[:2] == (0, "covered")
    entry, action, distance = place([10.0, 4.0, 0, 0], "c")
    assert (entry, action, distance) == (2, "split", 4.0)
    assert float(codebook.radii[0]) == float(codebook.radii[2]) == 2.0
    assert place([0, 0, 0, 20.0], "d")[:2] == (1, "overwritten") and codebook.labels[1] == "d"
    # the lookup: inside a ball the entry's value replaces the output, outside the output is kept
    codebook.values = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    codebook.undo_stack.append((0, lambda: None))
    keys = torch.tensor([[[10.5, 0, 0, 0], [10.0, 3.9, 0, 0], [-50.0, 0, 0, 0]]])
    out = codebook.adapt(keys, torch.full((1, 3, 2), 9.0))
    assert out.tolist() == [[[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]]


def test_grace_keeps_a_new_ball_short_of_the_reference_facts():
    """A new entry's radius is radius × the key's norm, or reference_share of the distance to the nearest reference key if that is less."""
    config = GraceConfig(radius=0.5, reference_share=0.6)
    key = torch.tensor([10.0, 0.0])
    reference = torch.tensor([[10.0, 0.0], [10.0, 5.0], [0.0, 30.0]])   # the first is the edit's own prompt: skipped
    assert Grace._new_radius(key, None, config) == 5.0                  # no reference keys: the norm rule
    assert Grace._new_radius(key, reference, config) == pytest.approx(3.0)           # 0.6 × 5 < 0.5 × 10
    assert Grace._new_radius(torch.tensor([10.0, 50.0]), reference, config) == pytest.approx(0.6 * float(torch.tensor([10.0, 20.0]).norm()))
    assert Grace._new_radius(key, reference, GraceConfig(radius=0.5, reference_share=0)) == 5.0
    assert Grace._new_radius(key, reference, GraceConfig(radius=0.2, reference_share=0.6)) == pytest.approx(2.0)  # the norm rule is less


def test_grace_reads_the_reference_keys_once_per_run(tokenizer):
    """The 96 shipped prompts are read at the codebook's layer on the context's first edit, not again; new balls stay short of them."""
    from keditlab.methods.common import shipped_fact_prompts

    model = _tiny()
    profile = derive_profile(model)
    settings = {**FAST["grace"], "layer": 1}
    context = EditContext()
    first = get_method("grace").apply(model, tokenizer, profile, [FIRST], settings, context)
    (reference,) = context.memory["grace-reference"].values()
    assert len(shipped_fact_prompts()) == 96 and reference.shape == (96, profile.mlp_out_input_size)
    first.restore()
    second = get_method("grace").apply(model, tokenizer, profile, [SECOND], settings, context)   # a new codebook, the same keys
    (again,) = context.memory["grace-reference"].values()
    assert again is reference
    codebook = next(m for m in model.modules() if isinstance(m, GraceCodebook))
    case = second.details["cases"][0]
    added = [(entry, radius) for entry, action, radius in zip(case["entries"], case["actions"], case["radii"]) if action == "added"]
    assert added and all(radius <= 0.6 * float((reference - codebook.keys[entry]).norm(dim=1).min()) + 1e-3 for entry, radius in added)
    second.restore()
    assert not any(isinstance(m, GraceCodebook) for m in model.modules())


def test_wise_route_ignores_padding(tokenizer):
    """A row's route and logits are the same alone and padded in a batch beside a longer row."""
    from keditlab.evaluate.teacher_forced import teacher_forced

    model = _tiny()
    profile = derive_profile(model)
    with get_method("wise").apply(model, tokenizer, profile, [FIRST], {**FAST["wise"], "layer": 1}):
        alone = teacher_forced(model, tokenizer, [(FIRST.prompt, FIRST.target)], batch_size=1)[0]
        batched = teacher_forced(model, tokenizer, [(FIRST.prompt, FIRST.target), (SECOND.prompt + " and a much longer tail of words", "x")], batch_size=2)[0]
    assert alone.predicted == batched.predicted
    assert alone.nll == pytest.approx(batched.nll, abs=1e-4)


def test_ties_merge():
    a = torch.tensor([1.0, 0.0, 2.0, -1.0])
    b = torch.tensor([3.0, 5.0, -1.0, 0.0])
    assert ties_merge([a, b]).tolist() == [2.0, 5.0, 2.0, -1.0]


def test_default_layer_follows_depth():
    assert adaptor_layer(30) == 24 and adaptor_layer(2) == 1 and adaptor_layer(1) == 0


@pytest.mark.parametrize("method, settings, message", [
    ("grace", {"radius": 0}, r"radius: 0 is out of range; it must be > 0"),
    ("grace", {"radius": -1.0}, r"radius: -1.0 is out of range"),
    ("grace", {"steps": 0}, r"steps: 0 is out of range; it must be >= 1"),
    ("grace", {"layer": 7}, r"layer: layer 7 is outside this model's layers 0\.\.2"),
    ("wise", {"layer": -1}, r"layer: layer -1 is outside this model's layers 0\.\.2"),
    ("wise", {"mask_ratio": 0}, r"mask_ratio: 0 is out of range; it must be > 0 and <= 1"),
    ("wise", {"mask_ratio": 1.5}, r"mask_ratio: 1.5 is out of range"),
    ("wise", {"merge": "average"}, r"merge: 'average' is not one of ties, sum"),
    ("wise", {"alpha": 0.6, "beta": 0.5}, r"alpha: 0.6 is not below beta \(0.5\).*Fix"),
    ("wise", {"shard_size": 0}, r"shard_size: 0 is out of range; it must be >= 1"),
    ("wise", {"act_ratio": 0}, r"act_ratio: 0 is out of range"),
])
def test_bad_settings_are_one_clear_error(method, settings, message, tokenizer):
    model = _tiny()
    with pytest.raises(MethodConfigError, match=message):
        get_method(method).apply(model, tokenizer, derive_profile(model), [FIRST], settings)
    assert not any(name.endswith((".grace", ".wise")) for name, _ in model.named_modules())


def test_a_stream_keeps_one_layer(tokenizer):
    model = _tiny()
    profile = derive_profile(model)
    with get_method("grace").apply(model, tokenizer, profile, [FIRST], {"steps": 2, "layer": 1}):
        with pytest.raises(MethodConfigError, match=r"layer: a grace codebook is already installed on .*layers\.1\.mlp"):
            get_method("grace").apply(model, tokenizer, profile, [SECOND], {"steps": 2, "layer": 2})
    assert WiseConfig().layer is None


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral", "gpt2", "gptj", "gpt_neox"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_upper_passes_on_a_subset_of_rows_equal_the_whole_model(model_type, layer):
    """Blocks below ``layer`` replayed from one recorded pass: any rows, any order, trimmed to their longest, same numbers."""
    from keditlab.methods.adaptors import upper_passes
    from keditlab.models.sampling import right_padded

    model = make_tiny_model(model_type)
    blocks = derive_profile(model).layers
    g = torch.Generator().manual_seed(2)
    rows = [torch.randint(1, 128, (n,), generator=g).tolist() for n in (7, 3, 9, 5)]
    ids, mask = right_padded(rows, 0, torch.device("cpu"))
    with torch.no_grad(), upper_passes(model, blocks, layer, ids, mask, chunk=3) as run:
        everything = run()
        part = run([3, 1])
    assert part.shape[1] == 5                                  # trimmed to the longest of rows 3 and 1
    for i, r in enumerate([3, 1]):
        with torch.no_grad():
            whole = model.base_model(input_ids=torch.tensor([rows[r]])).last_hidden_state[0]
        assert torch.allclose(part[i, :len(rows[r])], whole, atol=1e-5), (model_type, layer, r)
        assert torch.allclose(everything[r, :len(rows[r])], whole, atol=1e-5), (model_type, layer, r)
    assert all(not type(b).__name__.startswith("_Replay") for b in model.get_submodule(blocks))   # blocks put back
