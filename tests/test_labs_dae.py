"""Tests for pacx/models/labs_dae.py: corruption, the masked loss, the encode quirk, training progress and
checkpoints."""
import math

import pytest
import torch

from pacx.errors import PacxError
from pacx.models.labs_dae import LabDAE, LabDAEConfig, masked_mse
from pacx.weights import lab_dae_checkpoint, load_lab_dae


def lab_batch(n: int, seed: int, observed: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 50, generator=g)
    m = (torch.rand(n, 50, generator=g) < observed).float()
    return x, m


def test_architecture_and_key_names():
    model = LabDAE()
    expected = {
        "encoder.0.weight": (512, 100), "encoder.0.bias": (512,), "encoder.1.weight": (512,),
        "encoder.1.bias": (512,), "encoder.3.weight": (256, 512), "encoder.3.bias": (256,),
        "decoder.0.weight": (512, 256), "decoder.0.bias": (512,), "decoder.2.weight": (50, 512),
        "decoder.2.bias": (50,),
    }  # fmt: skip
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    x, m = lab_batch(4, 0)
    _, x_hat = model(x, m)
    assert x_hat.min() >= 0 and x_hat.max() <= 1  # Sigmoid output


def test_corruption_drops_fifteen_percent_of_observed_only():
    model = LabDAE()
    x, m = lab_batch(4000, 1)
    x_in, m_in = model.corrupt(x, m, generator=torch.Generator().manual_seed(2))
    missing, observed = m == 0, m == 1
    assert torch.all(x_in[missing] == 0) and torch.all(m_in[missing] == 0)  # x was non-zero there
    dropped = observed & (m_in == 0)
    kept = observed & (m_in == 1)
    assert torch.all(x_in[dropped] == 0) and torch.equal(x_in[kept], x[kept])
    assert torch.all((m_in == 0) | (m_in == 1)) and torch.all(m_in <= m)
    rate = dropped.sum().item() / observed.sum().item()
    # ~140,000 observed entries: the binomial std of the rate is ~0.001, so 0.005 is a 5-sigma band.
    assert abs(rate - 0.15) < 0.005


def test_corruption_is_the_reference_draw():
    """Same seed, same mask as the reference's `rand_like(m) < p & (m > 0.5)`, written out here independently."""
    model = LabDAE()
    x, m = lab_batch(64, 3)
    torch.manual_seed(4)
    x_in, m_in = model.corrupt(x, m)
    torch.manual_seed(4)
    drop = (torch.rand_like(m) < 0.15) & (m > 0.5)
    ref_x, ref_m = (x * m).clone(), m.clone()
    ref_x[drop], ref_m[drop] = 0.0, 0.0
    assert torch.equal(x_in, ref_x) and torch.equal(m_in, ref_m)


def test_masked_mse_hand_computation_and_missing_entries_ignored():
    x = torch.tensor([[0.2, 0.5, 0.9], [0.1, 0.4, 0.6]])
    m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    x_hat = torch.tensor([[0.3, 0.0, 0.7], [0.9, 0.9, 0.2]])
    expected = (0.1**2 + 0.2**2 + 0.4**2) / 3
    assert masked_mse(x_hat, x, m).item() == pytest.approx(expected, rel=1e-6)
    x_hat2 = torch.where(m == 0, torch.rand_like(x_hat), x_hat)
    assert masked_mse(x_hat2, x, m).item() == masked_mse(x_hat, x, m).item()
    assert masked_mse(x_hat, x, torch.zeros_like(m)).item() == 0.0  # nothing observed: 0, not NaN


def test_forward_loss_scores_originally_observed_entries():
    model = LabDAE()
    x, m = lab_batch(32, 5)
    loss, x_hat = model(x, m, generator=torch.Generator().manual_seed(6))
    x_in, m_in = model.corrupt(x, m, generator=torch.Generator().manual_seed(6))
    assert torch.equal(x_hat, model.decoder(model.encoder(torch.cat([x_in, m_in], 1))))
    hand = ((x_hat - x) ** 2)[m == 1].mean()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)


def test_encode_quirk_differs_from_clean_only_where_missing_is_nonzero():
    model = LabDAE().eval()
    x, m = lab_batch(6, 7)
    m[0] = 1.0  # row 0: nothing missing
    x[1] = x[1] * m[1]  # row 1: missing entries already zero
    with torch.no_grad():
        quirk, clean = model.encode(x, m), model.encode(x, m, zero_missing=True)
    assert quirk.shape == (6, 256)
    assert torch.equal(quirk[:2], clean[:2])
    assert all(not torch.allclose(quirk[i], clean[i]) for i in range(2, 6))
    with torch.no_grad():
        assert torch.equal(clean, model.encode(x * m, m))


def test_a_few_dozen_steps_reduce_the_loss():
    # Structured labs: 50 percentiles driven by 3 hidden factors, 30% missing.
    torch.manual_seed(0)
    z, mix = torch.randn(256, 3), torch.randn(3, 50)
    x = torch.sigmoid(z @ mix)
    m = (torch.rand(256, 50) < 0.7).float()
    model = LabDAE()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)

    def eval_loss():
        with torch.no_grad():
            return model(x, m, generator=torch.Generator().manual_seed(123))[0].item()

    before = eval_loss()
    for _ in range(30):
        loss, _ = model(x, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert math.isfinite(after) and after < 0.3 * before


def test_checkpoint_round_trip(tmp_path):
    cfg = LabDAEConfig(hidden=64, latent=16)
    model = LabDAE(cfg).eval()
    torch.save(lab_dae_checkpoint(model, epoch=3), tmp_path / "dae.pt")
    loaded = load_lab_dae(tmp_path / "dae.pt").eval()
    assert loaded.cfg == cfg
    x, m = lab_batch(8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, m), model.encode(x, m))

    # The reference's Lightning layout: 'state_dict' with a 'model.' prefix; sizes come from the shapes.
    lightning = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 49}
    torch.save(lightning, tmp_path / "ref.ckpt")
    loaded = load_lab_dae(tmp_path / "ref.ckpt").eval()
    assert (loaded.cfg.hidden, loaded.cfg.latent, loaded.cfg.n_labs) == (64, 16, 50)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, m), model.encode(x, m))

    torch.save({"model": model.state_dict(), "config": {"hiden": 64}}, tmp_path / "bad.pt")
    with pytest.raises(PacxError, match=r"field\(s\) \['hiden'\] that this pacx's LabDAEConfig does not know"):
        load_lab_dae(tmp_path / "bad.pt")
