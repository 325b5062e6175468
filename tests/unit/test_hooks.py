"""The one hook helper: hooks come off however a block ends, nest, and persistent handles are removed once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from keditlab.models.hooks import HookHandle, StopForward, add_hook, hooks


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _hook_count(net: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_hooks_are_on_inside_the_block_and_off_after_it():
    net, x = _net(), torch.randn(3, 4)
    plain = net(x)
    with hooks(forward=[(net[2], lambda _m, _i, out: out + 1.0)]) as handles:
        assert [h.active for h in handles] == [True] and _hook_count(net) == 1
        torch.testing.assert_close(net(x), plain + 1.0)
    assert not handles[0].active and _hook_count(net) == 0
    torch.testing.assert_close(net(x), plain)


def test_hooks_come_off_when_the_block_raises():
    net = _net()
    with pytest.raises(KeyboardInterrupt):
        with hooks(pre=[(net[0], lambda _m, inputs: None)], forward=[(net[2], lambda *_: None)]):
            raise KeyboardInterrupt   # a notebook's interrupt: nothing may stay behind
    assert _hook_count(net) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with hooks(forward=[(net[0], lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))]):
            net(torch.randn(1, 4))    # the hook itself fails
    assert _hook_count(net) == 0


def test_stop_forward_ends_the_pass_and_the_block_quietly():
    net, seen, after = _net(), [], []

    def grab(_m, inputs):
        seen.append(inputs[0])
        raise StopForward

    with hooks(pre=[(net[0], grab)], forward=[(net[2], lambda *_: after.append(1))]):
        net(torch.randn(2, 4))
        after.append("not reached")   # the block ends at StopForward
    assert len(seen) == 1 and after == [] and _hook_count(net) == 0


def test_blocks_nest_and_pre_hooks_may_replace_inputs():
    net, x = _net(), torch.randn(2, 4)
    calls = []
    with hooks(pre=[(net[0], lambda _m, inputs: (inputs[0] * 0,))]):
        with hooks(forward=[(net[2], lambda *_: calls.append("inner"))]):
            zeroed = net(x)
            assert _hook_count(net) == 2
        assert _hook_count(net) == 1       # the inner block's hook is gone, the outer one stays
        torch.testing.assert_close(net(x), zeroed)
    assert _hook_count(net) == 0 and calls == ["inner"]


def test_a_persistent_handle_outlives_blocks_and_removes_once():
    net, x = _net(), torch.randn(2, 4)
    handle = add_hook(net[2], lambda _m, _i, out: out * 0)
    assert isinstance(handle, HookHandle) and handle.active and "forward hook" in repr(handle)
    with hooks(forward=[(net[0], lambda *_: None)]):
        pass
    assert float(net(x).detach().abs().sum()) == 0.0   # still on after an unrelated block
    handle.remove()
    handle.remove()                           # idempotent
    assert not handle.active and _hook_count(net) == 0
    kwargs_seen = []
    with_kwargs = add_hook(net, lambda _m, args, kwargs: kwargs_seen.append(sorted(kwargs)), pre=True, with_kwargs=True)
    net(x)
    with_kwargs.remove()
    assert kwargs_seen == [[]] and _hook_count(net) == 0


def test_hooks_are_registered_in_one_module_only():
    """Every forward hook of keditlab goes through keditlab.models.hooks, so every one is taken off again."""
    package = Path(__file__).resolve().parents[2] / "keditlab"
    found = [f"{path.relative_to(package.parent)}:{number}"
             for path in sorted(package.rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"register_forward", line)]
    assert found and all(place.startswith("keditlab/models/hooks.py:") for place in found), found
