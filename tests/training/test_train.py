"""train()/load_trained(): run directory contents, overwrite protection, resume, errors, two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from training.helpers_train import StopAt, tiny_config

from segloss import __version__
from segloss.training import TrainConfig, load_trained, train

HERE = Path(__file__).resolve().parent


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter_model.safetensors")


def test_run_directory_holds_adapter_tokenizer_config_and_summary(tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "run"
    config = tiny_config(tiny_model_dir, out, loss="lovasz", max_steps=2, save_steps=1, save_total_limit=1)
    result = train(config)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 == result.global_step
    assert summary["loss_weights"] == {"ce": 0.6, "lovasz": 0.4}
    assert summary["tokens"] > 0 and summary["wall_time_s"] > 0 and summary["segloss_version"] == __version__
    assert set(summary["final_losses"]) == {"ce", "task", "total"}
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "config.yaml", "segloss.json"):
        assert (out / name).is_file(), name
        assert (out / "checkpoint-2" / name).is_file(), name
    assert not (out / "checkpoint-1").exists()  # save_total_limit=1 rotated it away
    assert (out / "config.yaml").read_text().startswith("# segloss train --config ")
    assert json.loads((out / "segloss.json").read_text())["segloss_version"] == __version__

    model, tokenizer, loaded = load_trained(out)
    assert loaded == config and tokenizer.pad_token is not None
    saved = _adapter(out)
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # B starts at zero: training moved it
    in_memory = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(in_memory) == len(lora_b)
    assert not model.training


def test_full_finetune_run_loads_back(tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "full"
    result = train(tiny_config(tiny_model_dir, out, full_finetune=True, max_steps=1, learning_rate=1e-3))
    assert not (out / "adapter_config.json").exists()
    model, _, config = load_trained(out)
    assert config.full_finetune
    name, trained = next(iter(result.model.state_dict().items()))
    assert torch.equal(model.state_dict()[name], trained)


def test_refuses_a_non_empty_output_dir(tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"output_dir.*--resume.*--overwrite"):
        train(tiny_config(tiny_model_dir, out, max_steps=1))
    assert (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="lora_target_modules"):  # a failing run deletes nothing, even --overwrite
        train(tiny_config(tiny_model_dir, out, max_steps=1, overwrite=True, lora_target_modules=["nope"]))
    assert (out / "precious.txt").read_text() == "keep me"
    train(tiny_config(tiny_model_dir, out, max_steps=1, overwrite=True))
    assert not (out / "precious.txt").exists() and (out / "train_summary.json").is_file()


def test_resume_continues_at_the_right_step_with_the_same_data_order(tiny_model_dir, tmp_path) -> None:
    common = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 2, "lora_dropout": 0.0}
    straight = train(tiny_config(tiny_model_dir, tmp_path / "straight", **common))
    interrupted = tmp_path / "interrupted"
    first = train(tiny_config(tiny_model_dir, interrupted, **common), callbacks=[StopAt(2)])
    assert first.global_step == 2 and (interrupted / "checkpoint-2").is_dir()
    resumed = train(tiny_config(tiny_model_dir, interrupted, resume=True, **common))
    assert resumed.global_step == 4
    assert resumed.summary["resumed_from"].endswith("checkpoint-2")
    reference, final = _adapter(tmp_path / "straight"), _adapter(interrupted)
    for key, value in reference.items():  # same batches in the same order ⇒ the same weights
        assert torch.allclose(value, final[key], atol=1e-6), key
    assert straight.summary["tokens"] == resumed.summary["tokens"]


def test_missing_model_path_is_a_clear_error(tmp_path) -> None:
    config = TrainConfig(model=str(tmp_path / "no-such-model"), output_dir=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="model: no model directory"):
        train(config)
    assert not (tmp_path / "out").exists()


def test_lora_targets_matching_nothing_fail_before_training(tiny_model_dir, tmp_path) -> None:
    config = tiny_config(tiny_model_dir, tmp_path / "out", lora_target_modules=["c_attn"], max_steps=1)
    with pytest.raises(ValueError, match="q_proj"):
        train(config)


def test_load_trained_needs_a_run_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.yaml"):
        load_trained(tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_ddp(model_dir: Path, out: Path, head: str, loss: str = "focal") -> tuple[dict, dict]:
    """Two CPU processes (gloo) of ddp_worker.py; each rank's saved trainable weights and summary."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", port, str(HERE / "ddp_worker.py"), str(model_dir), str(out), head, loss]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    return rank0, rank1


@pytest.fixture(scope="module")
def ddp_materialised(tiny_model_dir, tmp_path_factory) -> tuple[Path, dict, dict]:
    """One two-process run with the materialised head, shared by the two DDP tests (a torchrun costs seconds).

    Lovász pools the optimizer step (group: batch): GA 2 on 2 processes runs the statistics pass through the Trainer,
    its collectives included, with either head (tests/losses/test_accumulate.py checks its exactness under gloo)."""
    out = tmp_path_factory.mktemp("ddp") / "plain"
    return (out, *_run_ddp(tiny_model_dir, out, "materialised", "lovasz"))


@pytest.mark.slow
def test_two_processes_agree_on_the_final_adapter(ddp_materialised) -> None:
    out, rank0, rank1 = ddp_materialised
    assert rank0["summary"]["world_size"] == 2 and rank0["summary"]["steps"] == 3
    assert rank0["summary"]["fused_loss"] is False
    assert rank0["weights"].keys() == rank1["weights"].keys()
    for name, value in rank0["weights"].items():
        assert torch.equal(value, rank1["weights"][name]), name
    saved = _adapter(out)
    moved = [k for k, v in rank0["weights"].items() if "lora_B" in k and float(v.abs().max()) > 0]
    assert moved and len(saved) == len(rank0["weights"])


@pytest.mark.slow
def test_fused_head_under_two_processes_trains_like_the_materialised_head(
    tiny_model_dir, tmp_path, ddp_materialised
) -> None:
    # The fused loss computes the head inside the loss; under DDP its gradients must still be all-reduced and scaled
    # like the materialised path's: same grad norms (Adam would hide a scale error in the weights), same adapter.
    fused0, fused1 = _run_ddp(tiny_model_dir, tmp_path / "fused", "fused", "lovasz")
    plain_dir, plain0, _ = ddp_materialised
    assert fused0["summary"]["fused_loss"] is True and fused0["summary"]["world_size"] == 2
    norms = {}
    for name, run in (("fused", tmp_path / "fused"), ("plain", plain_dir)):
        history = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
        norms[name] = torch.tensor([h["grad_norm"] for h in history if "grad_norm" in h])
    assert len(norms["fused"]) == 3
    torch.testing.assert_close(norms["fused"], norms["plain"], rtol=1e-5, atol=0.0)
    for name, value in fused0["weights"].items():
        assert torch.equal(value, fused1["weights"][name]), name  # the ranks agree
        # float32 rounding differs between the two heads and Adam magnifies it in near-zero gradient entries
        torch.testing.assert_close(value, plain0["weights"][name], rtol=0.0, atol=1e-5, msg=name)


def test_padding_free_run_trains_like_the_padded_one(tiny_model_dir, tmp_path) -> None:
    # TRL's padding-free batches are split back into their sequences: a per-sequence loss gives the same step.
    settings = {"loss": "gdice", "loss_options": {"gdice": {"group": "sequence"}}, "max_steps": 1, "lora_dropout": 0.0}
    padded = train(tiny_config(tiny_model_dir, tmp_path / "padded", **settings))
    packed = train(tiny_config(tiny_model_dir, tmp_path / "packed", padding_free=True, **settings))
    assert yaml.safe_load((tmp_path / "packed" / "config.yaml").read_text())["padding_free"] is True
    assert packed.summary["steps"] == padded.summary["steps"] == 1
    before, after = _adapter(tmp_path / "padded"), _adapter(tmp_path / "packed")
    assert any(float(v.abs().max()) > 0 for k, v in before.items() if "lora_B" in k)
    for name, value in before.items():
        assert torch.allclose(after[name], value, rtol=1e-4, atol=1e-6), name
