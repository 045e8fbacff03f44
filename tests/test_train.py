import numpy as np
import pytest
import torch

from circuitbook.models.gpt import GPT, GPTConfig
from circuitbook.train import TrainConfig, get_batch, train

CFG = dict(vocab_size=64, n_ctx=16, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)


def _run(ckpt, stop_at=None):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    toks = np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16)
    tcfg = TrainConfig(steps=30, batch_size=4, n_ctx=16, lr=1e-2, eval_every=10, eval_batches=1, ckpt_every=7,
                       keep_steps=(5, 20))
    out = train(model, toks, toks, tcfg, ckpt_dir=ckpt, stop_at=stop_at, progress=False)
    return model, out


def test_killed_run_resumes_to_identical_weights(tmp_path):
    ref, ref_out = _run(None)
    _run(tmp_path, stop_at=13)  # "killed" after step 13; the last checkpoint is at 13
    resumed, out = _run(tmp_path)  # a fresh process would start exactly like this
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [r["train_loss"] for r in out["history"]] == [r["train_loss"] for r in ref_out["history"]]
    assert sorted(out["kept"]) == [5, 20] and torch.equal(out["kept"][20]["embed.weight"],
                                                          ref_out["kept"][20]["embed.weight"])


def test_training_reduces_loss_and_batches_are_deterministic():
    toks = np.arange(1000, dtype=np.uint16) % 64
    assert torch.equal(get_batch(toks, 3, 4, 16, 0), get_batch(toks, 3, 4, 16, 0))
    assert not torch.equal(get_batch(toks, 3, 4, 16, 0), get_batch(toks, 4, 4, 16, 0))
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    out = train(model, toks, toks, TrainConfig(steps=60, batch_size=8, n_ctx=16, lr=1e-2, eval_every=60,
                                               eval_batches=1), progress=False)
    h = out["history"]
    assert h[-1]["val_loss"] < 0.5 * np.log(64)  # a periodic sequence is easy to predict


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    _run(tmp_path, stop_at=13)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    toks = np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16)
    other = TrainConfig(steps=30, batch_size=4, n_ctx=16, lr=5e-3, eval_every=10, eval_batches=1, ckpt_every=7)
    with pytest.warns(UserWarning, match="another config"):
        out = train(model, toks, toks, other, ckpt_dir=tmp_path, progress=False)
    assert out["history"][0]["step"] == 1  # started from scratch


def test_torchrun_two_processes_match_one_process(tmp_path):
    """DDP over 2 CPU processes (gloo) on the weight-sparse recipe ends at the weights of one process that
    sees the whole global batch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from circuitbook.artifacts import load_tensors

    worker = Path(__file__).with_name("ddp_worker.py")
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "lib")}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(worker), str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp, meta = load_tensors(out)
    assert meta["world_size"] == 2
    sys.path.insert(0, str(worker.parent))
    try:
        from ddp_worker import run
    finally:
        sys.path.pop(0)
    alone = run().state_dict()
    assert set(ddp) == set(alone)
    for k, v in alone.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
