"""Model files: atomic writes, strict and checksummed loading, guides, standardisation, eval mode."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import pyroflows as pf
import pyroflows.cli
from pyroflows.cli import main
from pyroflows.flows import _checksum
from pyroflows.transforms import Standardize


def small_maf(dim: int = 2) -> pf.MAF:
    torch.manual_seed(0)
    flow = pf.MAF(dim, num_layers=2, hidden_dims=(8,))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def rewrite(path, *, resign: bool = True, **changes) -> None:
    """Edit the fields of a saved model file (and re-sign it unless ``resign=False``)."""
    payload = torch.load(str(path), weights_only=True)
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    if resign and "checksum" in payload:
        # no tensors to sign (a broken state dict): load reports that before the checksum
        with contextlib.suppress(KeyError, AttributeError, TypeError):
            payload["checksum"] = _checksum(payload)
    torch.save(payload, str(path))


def legacy_file(path, flow, metadata) -> None:
    """A model file as pyroflows wrote it before checksums (format 1)."""
    from pyroflows.flows import _encode

    torch.save(
        {
            "format": "pyroflows-model-1",
            "config": json.dumps(_encode(flow.config)),
            "metadata": json.dumps(metadata),
            "state_dict": {k: v.detach().clone() for k, v in flow.state_dict().items()},
        },
        str(path),
    )


# ---- 6: atomic save --------------------------------------------------------------------------


def test_a_save_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    good = small_maf()
    pf.save(good, path)
    x = torch.randn(4, 2)
    expect = good.log_prob(x)

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, bytes)) or hasattr(f, "__fspath__"):
            f = open(f, "wb")  # noqa: SIM115 (the old code passed a path)
        f.write(b"PK\x03\x04 half a model")
        f.flush()
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        pf.save(pf.MAF(2, num_layers=1, hidden_dims=(4,)), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    torch.testing.assert_close(pf.load(path).log_prob(x), expect)


def test_save_to_a_directory_or_a_missing_folder_says_what_to_do(tmp_path):
    flow = small_maf()
    with pytest.raises(IsADirectoryError, match="give a file name"):
        pf.save(flow, tmp_path)
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        pf.save(flow, tmp_path / "missing" / "m.pt")
    assert list(tmp_path.iterdir()) == []


# ---- 9: nothing in a file is called; malformed and altered files ----------------------------


@pytest.mark.parametrize(
    "name",
    [
        "pyroflows.cli.main",  # a function of pyroflows: the command line
        "builtins.eval",
        "os.system",
        "torch.nn.modules.linear.Linear",  # an nn.Module that is no activation (needs arguments)
        "pyroflows.flows.MAF",  # a flow, not an activation
        "pyroflows.transforms.standardize.Standardize",
    ],
)
def test_load_calls_nothing_but_activation_classes_named_in_a_file(tmp_path, monkeypatch, name):
    calls = []
    monkeypatch.setattr(pyroflows.cli, "main", lambda *a, **k: calls.append(a) or 0)
    path = tmp_path / "evil.pt"
    flow = small_maf()
    legacy_file(path, flow, {})  # the old format has no checksum, so the attack needs no forging
    config = json.loads(torch.load(str(path), weights_only=True)["config"])
    config["activation"] = {"__class__": name}
    rewrite(path, config=json.dumps(config))
    with pytest.raises(ValueError, match="refusing") as info:
        pf.load(path)
    assert "\n" not in str(info.value)
    assert calls == []
    # the same attack in a checksummed file (re-signed by the attacker) is refused the same way
    pf.save(flow, path)
    rewrite(path, config=json.dumps(config))
    with pytest.raises(ValueError, match="refusing"):
        pf.load(path)
    assert calls == []


def test_activations_from_torch_nn_still_round_trip(tmp_path):
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,), activation=torch.nn.Tanh)
    pf.save(flow, tmp_path / "m.pt")
    assert pf.load(tmp_path / "m.pt").config["activation"] is torch.nn.Tanh


def test_save_refuses_an_activation_that_load_would_refuse(tmp_path):
    class Mine(torch.nn.Module):
        def forward(self, x):
            return x.tanh()

    with pytest.raises(ValueError, match="only name activation classes"):
        pf.save(pf.MAF(2, num_layers=1, hidden_dims=(4,), activation=Mine), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def _state_without(state, key):
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    "case",
    [
        "no config",
        "no state dict",
        "config not JSON",
        "config not an object",
        "no flow class",
        "unknown argument",
        "bad argument value",
        "missing weight",
        "extra weight",
        "wrong shape",
        "not a tensor",
        "unknown kind",
    ],
)
def test_malformed_files_give_a_one_line_value_error_in_python_and_in_the_cli(
    tmp_path, capsys, case
):
    path = tmp_path / "m.pt"
    flow = small_maf()
    pf.save(flow, path)
    payload = torch.load(str(path), weights_only=True)
    config, state = json.loads(payload["config"]), payload["state_dict"]
    weight = next(k for k in state if k.endswith("weight"))
    changes = {
        "no config": {"config": None},
        "no state dict": {"state_dict": None},
        "config not JSON": {"config": "{not json"},
        "config not an object": {"config": "[1, 2]"},
        "no flow class": {"config": json.dumps(_state_without(config, "class"))},
        "unknown argument": {"config": json.dumps({**config, "evil": 1})},
        "bad argument value": {"config": json.dumps({**config, "transformer": "spline"})},
        "missing weight": {"state_dict": _state_without(state, weight)},
        "extra weight": {"state_dict": {**state, "extra.weight": torch.zeros(2)}},
        "wrong shape": {"state_dict": {**state, weight: torch.zeros(3, 3)}},
        "not a tensor": {"state_dict": {**state, weight: [1.0, 2.0]}},
        "unknown kind": {"kind": "Pickle"},
    }[case]
    rewrite(path, **changes)
    with pytest.raises(ValueError) as info:
        pf.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    code = main(["score", str(path), str(data), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("pyroflows score: error:")


@pytest.mark.parametrize("what", ["weight", "config", "metadata"])
def test_a_file_whose_contents_were_altered_is_refused(tmp_path, what):
    path = tmp_path / "m.pt"
    flow = small_maf()
    pf.save(flow, path, note="kept")
    payload = torch.load(str(path), weights_only=True)
    if what == "weight":
        state = dict(payload["state_dict"])
        key = next(k for k in state if k.endswith("weight"))
        state[key] = state[key].clone()
        state[key].view(-1)[0] += 1e-3
        change = {"state_dict": state}
    elif what == "config":
        change = {"config": payload["config"].replace('"num_layers": 2', '"num_layers": 1')}
    else:
        change = {"metadata": json.dumps({"note": "forged"})}
    rewrite(path, resign=False, **change)
    with pytest.raises(ValueError, match="altered or damaged"):
        pf.load(path)


def test_files_written_before_checksums_still_load(tmp_path):
    flow = small_maf()
    legacy_file(tmp_path / "old.pt", flow, {"note": 1})
    again = pf.load(tmp_path / "old.pt")
    x = torch.randn(3, 2)
    torch.testing.assert_close(again.log_prob(x), flow.log_prob(x))
    assert again.metadata == {"note": 1}


@pytest.mark.parametrize("cls", [pf.RealNVP, pf.MAF])
def test_files_written_before_zero_init_load_with_their_weights(tmp_path, cls):
    flow = cls(2, num_layers=2, hidden_dims=(8,), zero_init=True)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    pf.save(flow, tmp_path / "m.pt")
    assert pf.load(tmp_path / "m.pt").config["zero_init"] is True  # recorded from now on
    payload = torch.load(str(tmp_path / "m.pt"), weights_only=True)
    config = json.loads(payload["config"])
    del config["zero_init"]  # as files were written before the option
    rewrite(tmp_path / "m.pt", config=json.dumps(config))
    again = pf.load(tmp_path / "m.pt")  # built with today's default, then its weights loaded
    x = torch.randn(3, 2)
    torch.testing.assert_close(again.log_prob(x), flow.eval().log_prob(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: pf.Glow(shape=(1, 4, 4), levels=2, steps_per_level=2, hidden_channels=8),
        lambda: pf.RealNVP(shape=(1, 4, 4), levels=2, steps_per_level=2, hidden_channels=8),
    ],
    ids=["Glow", "RealNVP"],
)
def test_image_flows_saved_with_steps_load_as_steps_per_level(tmp_path, make):
    flow = make()
    pf.save(flow, tmp_path / "new.pt")
    payload = torch.load(str(tmp_path / "new.pt"), weights_only=True)
    config = json.loads(payload["config"])
    config["steps"] = config.pop("steps_per_level")  # the key files were written with
    rewrite(tmp_path / "new.pt", config=json.dumps(config))
    again = pf.load(tmp_path / "new.pt")
    assert again.config["steps_per_level"] == 2 and "steps" not in again.config
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(again.log_prob(x), flow.eval().log_prob(x))


@pytest.mark.parametrize(
    ("cls", "option"), [(pf.NSF, "invert_spline"), (pf.MAF, "invert_affine")], ids=["NSF", "MAF"]
)
def test_files_written_before_the_side_options_load_with_the_base_side(tmp_path, cls, option):
    torch.manual_seed(0)
    old = cls(2, num_layers=2, hidden_dims=(8,), zero_init=False, **{option: False})
    pf.save(old, tmp_path / "old.pt")
    config = json.loads(torch.load(str(tmp_path / "old.pt"), weights_only=True)["config"])
    del config[option]  # files written before the option have no such key
    rewrite(tmp_path / "old.pt", config=json.dumps(config))
    again = pf.load(tmp_path / "old.pt")
    assert again.config[option] is False
    x = torch.randn(5, 2)
    torch.testing.assert_close(again.log_prob(x), old.eval().log_prob(x))
    # the same weights with the map on the data side (the default now) are another density
    new = cls(2, num_layers=2, hidden_dims=(8,))
    new.load_state_dict(old.state_dict())
    assert not torch.allclose(new.eval().log_prob(x), old.log_prob(x))
    pf.save(new, tmp_path / "new.pt")
    assert pf.load(tmp_path / "new.pt").config[option] is True


# ---- 17: eval mode -----------------------------------------------------------------------------


def test_loaded_flows_are_in_eval_mode(tmp_path):
    flow = pf.CNF(2, hidden_dims=(8,), rtol=1e-4, atol=1e-4)
    assert flow.training
    pf.save(flow, tmp_path / "cnf.pt")
    again = pf.load(tmp_path / "cnf.pt")
    assert not any(m.training for m in again.modules())
    assert again.transform.solver is again.transform.eval_solver  # the evaluation settings


# ---- 13: standardisation inside the flow -------------------------------------------------------


def test_standardize_is_a_fixed_affine_layer_with_its_log_jacobian():
    mean, std = torch.tensor([100.0, -5.0]), torch.tensor([10.0, 0.5])
    flow = small_maf()
    x = mean + std * torch.randn(6, 2)
    z = (x - mean) / std
    before = flow.log_prob(z)
    assert flow.standardize_(mean=mean, std=std) is flow
    torch.testing.assert_close(flow.log_prob(x), before - std.log().sum())
    assert isinstance(flow.transforms[-1], Standardize)
    assert not any(p is flow.transforms[-1].mean for p in flow.parameters())  # buffers only
    report = pf.check_flow(flow)  # round trips and log-det against autograd, float64
    assert report.passed, report
    # calling it again replaces the layer instead of stacking a second one
    n = len(flow.transforms)
    flow.standardize_(mean=torch.zeros(2), std=torch.ones(2))
    assert len(flow.transforms) == n
    torch.testing.assert_close(flow.log_prob(z), before)


def test_standardize_from_data_then_fit_on_raw_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal([1e4, -3.0], [50.0, 0.01], size=(2000, 2)), dtype=torch.float32)
    flow = pf.MAF(2, num_layers=2, hidden_dims=(16,)).standardize_(x)
    st = flow.transforms[-1]
    torch.testing.assert_close(st.mean, x.double().mean(0).float())
    pf.fit(flow, x, steps=100, lr=1e-2, seed=0, progress=False)
    truth = sum(0.5 * math.log(2 * math.pi * math.e * s**2) for s in (50.0, 0.01))
    with torch.no_grad():
        assert float(-flow.log_prob(x).mean()) == pytest.approx(truth, abs=0.2)
        s = flow.sample((4000,))
    assert torch.allclose(s.mean(0), torch.tensor([1e4, -3.0]), rtol=1e-3)
    assert float(st.mean[0]) == pytest.approx(float(x[:, 0].double().mean()))  # never trained
    pf.save(flow, tmp_path / "m.pt")
    again = pf.load(tmp_path / "m.pt")
    torch.testing.assert_close(again.log_prob(x[:50]), flow.log_prob(x[:50]))


def test_standardize_errors_say_what_to_do():
    flow = small_maf()
    with pytest.raises(ValueError, match="constant"):
        flow.standardize_(torch.tensor([[1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(TypeError, match="either data rows"):
        flow.standardize_(torch.randn(5, 2), mean=torch.zeros(2), std=torch.ones(2))
    with pytest.raises(TypeError, match="either data rows"):
        flow.standardize_(mean=torch.zeros(2))
    with pytest.raises(ValueError, match="std must be > 0"):
        flow.standardize_(mean=torch.zeros(2), std=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"rows of shape \(N, 2\)"):
        flow.standardize_(torch.randn(5, 3))
    with pytest.raises(ValueError, match="augmented"):
        pf.CNF(2, hidden_dims=(8,), augment_dim=1).standardize_(torch.randn(5, 2))


def test_cli_files_from_before_the_flow_held_its_standardisation_score_the_same(tmp_path, capsys):
    flow = small_maf()
    mean, std = np.array([100.0, -5.0]), np.array([10.0, 0.5])
    meta = {"standardizer": {"mean": mean.tolist(), "std": std.tolist(), "constant": []}}
    legacy_file(tmp_path / "old.pt", flow, {**meta, "columns": ["a", "b"]})
    x = mean + std * np.random.default_rng(0).normal(size=(20, 2))
    data = tmp_path / "d.csv"
    data.write_text("a,b\n" + "\n".join(f"{a:.17g},{b:.17g}" for a, b in x) + "\n")
    out = tmp_path / "s.npy"
    assert main(["score", str(tmp_path / "old.pt"), str(data), "--out", str(out)]) == 0
    z = torch.tensor((x - mean) / std, dtype=torch.float32)
    with torch.no_grad():
        expect = flow.log_prob(z).double().numpy() - np.log(std).sum()
    assert np.allclose(np.load(out)[:, 0], expect, atol=1e-4)


# ---- 12: AutoFlow guides -----------------------------------------------------------------------


def _model(data):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("n", len(data)):
        pyro.sample("y", dist.Normal(a + s.sum(), 1.0), obs=data)


def _other_model(data):
    pyro.sample("a", dist.Normal(0.0, 1.0))
    pyro.sample("s", dist.LogNormal(0.0, 1.0).expand([3]).to_event(1))


def _trained_guide(data, steps=5, seed=0):
    pyro.set_rng_seed(seed)
    guide = pf.AutoFlow(_model, pf.IAF, num_layers=2, hidden_dims=(8,))
    svi = SVI(_model, guide, pyro.optim.Adam({"lr": 5e-2}), Trace_ELBO())
    for _ in range(steps):
        svi.step(data)
    return guide


def _summaries(guide, data):
    pyro.set_rng_seed(7)
    median = guide.median(data)
    pyro.set_rng_seed(7)
    quantiles = guide.quantiles([0.1, 0.9], data)
    latent = torch.tensor([0.3, -0.2, 0.5])
    with torch.no_grad():
        lp = guide.get_posterior(data).log_prob(latent)
    pyro.set_rng_seed(7)
    draw = guide(data)
    return median, quantiles, lp, draw


def test_an_autoflow_guide_round_trips_with_its_model(tmp_path):
    data = torch.tensor([1.0, 2.0, 1.5])
    guide = _trained_guide(data)
    path = tmp_path / "guide.pt"
    pf.save(guide, path, note="guide")
    expect = _summaries(guide, data)
    # another guide of the same name runs in this process: its values sit in Pyro's param store
    _trained_guide(data, steps=3, seed=1)(data)

    again = pf.load(path, model=_model)
    assert isinstance(again, pf.AutoFlow) and again.metadata == {"note": "guide"}
    again(data)  # sees the model: the saved flow, loc and scale are put in place
    assert not any(m.training for m in again.modules())
    got = _summaries(again, data)
    for e, g in zip(expect, got, strict=True):
        if isinstance(e, dict):
            assert sorted(e) == sorted(g)
            for k in e:
                torch.testing.assert_close(g[k], e[k])
        else:
            torch.testing.assert_close(g, e)
    # it keeps training under SVI (its own parameters are the ones in the param store)
    before = again.loc.detach().clone()
    again.train()
    svi = SVI(_model, again, pyro.optim.Adam({"lr": 5e-2}), Trace_ELBO())
    svi.step(data)
    assert not torch.equal(again.loc.detach(), before)


def test_guide_files_need_their_model_and_the_same_latent_sites(tmp_path):
    data = torch.tensor([1.0, 2.0])
    path = tmp_path / "guide.pt"
    with pytest.raises(ValueError, match="has not seen the model"):
        pf.save(pf.AutoFlow(_model), path)
    guide = _trained_guide(data, steps=1)
    guide.save(path)
    with pytest.raises(ValueError, match=r"needs its model: pf.load\(path, model=model\)"):
        pf.load(path)
    wrong = pf.load(path, model=_other_model)
    with pytest.raises(ValueError, match=r"latent sites differ.*s \(2,\) GreaterThan.*s \(3,\)"):
        wrong(data)
    with pytest.raises(ValueError, match="latent sites differ"):  # and again: never half set up
        wrong.median(data)
    pf.save(small_maf(), tmp_path / "flow.pt")
    with pytest.raises(ValueError, match="holds a flow, not a guide"):
        pf.load(tmp_path / "flow.pt", model=_model)
