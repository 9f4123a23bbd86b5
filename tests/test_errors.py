"""Bad input gets a clear error that says what to do (core transforms and flows)."""

from __future__ import annotations

import pytest
import torch

import pyroflows as pf
from pyroflows import transforms as T
from pyroflows.transforms import is_validation_enabled


@pytest.mark.parametrize("flow_cls", [pf.MAF, pf.IAF, pf.RealNVP, pf.NICE, pf.Glow, pf.Planar])
def test_wrong_data_shape(flow_cls):
    flow = flow_cls(3, num_layers=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"Expected data shape \(\.\.\., 3\); got \(5, 4\)"):
        flow.log_prob(torch.randn(5, 4))


def test_wrong_shape_at_transform_level_names_the_layer():
    with pytest.raises(
        ValueError, match=r"Coupling: expected input shape \(\.\.\., 4\); got \(2, 3\)"
    ):
        T.Coupling(4)(torch.randn(2, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_names_rows(bad):
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))
    x = torch.randn(6, 2)
    x[4, 1] = bad
    with pytest.raises(pf.NonFiniteError, match=r"NaN or Inf \(first bad rows \[4\]\)"):
        flow.log_prob(x)


def test_non_finite_output_from_finite_input_names_the_layer():
    t = T.ElementwiseAffine(2)
    with torch.no_grad():
        t.log_scale.fill_(1e4)
    with pytest.raises(pf.NonFiniteError, match=r"ElementwiseAffine.*finite input"):
        t(torch.ones(1, 2))


def test_validation_can_be_switched_off_and_returns_nan():
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))
    with pf.validation(False):
        lp = flow.log_prob(torch.tensor([[float("nan"), 0.0]]))
    assert torch.isnan(lp).all()


def test_context_errors():
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,), context_dim=2)
    with pytest.raises(ValueError, match=r"Expected context shape \(\.\.\., 2\); got \(4, 5\)"):
        flow.log_prob(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="is conditional"):
        flow.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="unconditional"):
        pf.MAF(3, num_layers=2, hidden_dims=(8,)).log_prob(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="pass a context"):
        T.ConditionalCoupling(3, context_dim=2)(torch.randn(2, 3))


def test_dtype_mismatch_says_how_to_convert():
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,)).double()
    with pytest.raises(TypeError, match=r"float32 input for a torch.float64 transform"):
        flow.log_prob(torch.randn(3, 2, dtype=torch.float32))


def test_invalid_options():
    with pytest.raises(ValueError, match="fast must be"):
        T.MaskedAutoregressive(3, fast="fastest")
    with pytest.raises(ValueError, match="transformer must be"):
        T.Coupling(3, transformer="cubic")
    with pytest.raises(ValueError, match="input_dim >= 2"):
        T.Coupling(1)
    with pytest.raises(ValueError, match="permutation"):
        T.Permute([0, 0, 1])
    with pytest.raises(ValueError, match="base must be"):
        pf.MAF(2, base="laplace")


def test_save_of_a_hand_built_flow_explains_the_alternative(tmp_path):
    flow = pf.Flow([T.Coupling(2)], event_shape=(2,))
    with pytest.raises(ValueError, match="state_dict"):
        pf.save(flow, tmp_path / "x.pt")


def test_load_rejects_files_that_are_not_models(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a pyroflows model file"):
        pf.load(path)
    with pytest.raises(FileNotFoundError):
        pf.load(tmp_path / "missing.pt")


# ---- issue 10 items 16 and 17 ------------------------------------------------------------------
def test_validation_switch_is_per_thread_when_blocks_interleave():
    """Thread A's block never turns the checks off in B, and exits in any order restore each."""
    import threading

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def wait(e: threading.Event) -> None:
        assert e.wait(10), "the other thread did not arrive"

    def thread_a() -> None:
        with pf.validation(False):
            a_in.set()
            wait(b_in)
            seen["A inside, B inside"] = is_validation_enabled()
        seen["A after its block"] = is_validation_enabled()
        a_out.set()

    def thread_b() -> None:
        wait(a_in)
        seen["B while A is inside"] = is_validation_enabled()
        with pf.validation(False):
            b_in.set()
            wait(a_out)  # A left its block first
            seen["B inside after A left"] = is_validation_enabled()
            try:
                pf.RealNVP(2, num_layers=2, hidden_dims=(8,)).log_prob(
                    torch.tensor([[float("nan"), 0.0]])
                )
                seen["B's NaN scored without error"] = True
            except pf.NonFiniteError:
                seen["B's NaN scored without error"] = False
        seen["B after its block"] = is_validation_enabled()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {
        "A inside, B inside": False,
        "B while A is inside": True,
        "A after its block": True,
        "B inside after A left": False,
        "B's NaN scored without error": True,
        "B after its block": True,
    }
    assert is_validation_enabled()


def test_nan_context_is_named_not_the_weights():
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,), context_dim=2)
    c = torch.randn(4, 2)
    c[2, 0] = float("nan")
    with pytest.raises(
        pf.NonFiniteError, match=r"context contains NaN or Inf \(first bad rows \[2\]\)"
    ):
        flow.log_prob(torch.randn(4, 3), c)
    t = T.ConditionalCoupling(3, context_dim=2, hidden_dims=(8,))
    with pytest.raises(pf.NonFiniteError, match=r"Coupling \(inverse\): the context contains NaN"):
        t.condition(c).inv(torch.randn(4, 3))


def test_check_flow_on_a_conditional_flow_without_context():
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,), context_dim=2)
    with pytest.raises(ValueError, match=r"conditional \(context_dim=2\); pass context="):
        pf.check_flow(flow)
    with pytest.raises(
        ValueError, match=r"expected a context of shape \(\.\.\., 2\); got \(4, 3\)"
    ):
        pf.check_flow(flow, context=torch.randn(4, 3))
    with pytest.raises(ValueError, match="unconditional; do not pass a context"):
        pf.check_flow(pf.MAF(3, num_layers=2, hidden_dims=(8,)), context=torch.randn(2))
    assert pf.check_flow(flow, context=torch.randn(2)).passed


def test_integer_data_hint_says_convert_the_data():
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))
    with pytest.raises(TypeError, match=r"got torch.int64.*x.to\(torch.float32\)") as info:
        flow.log_prob(torch.randint(0, 3, (4, 2)))
    assert "flow.to" not in str(info.value)
    with pytest.raises(TypeError, match=r"x.to\(torch.float32\)") as info:
        T.Coupling(2, hidden_dims=(8,))(torch.randint(0, 3, (4, 2)))
    assert "int64)" not in str(info.value)  # never flow.to(torch.int64)


def test_context_rows_that_do_not_match_the_data_rows():
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,), context_dim=2)
    with pytest.raises(ValueError, match=r"batch shape \(4,\).*batch shape \(5,\)"):
        flow(torch.randn(4, 2)).log_prob(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"batch shape \(5,\) does not broadcast with the context"):
        T.ConditionalCoupling(3, context_dim=2, hidden_dims=(8,)).condition(torch.randn(4, 2)).inv(
            torch.randn(5, 3)
        )


def test_actnorm_ignores_an_empty_first_batch():
    t = T.ActNorm(2)
    assert t.inv(torch.empty(0, 2)).shape == (0, 2)
    assert torch.isfinite(t.log_scale).all() and not bool(t.initialized)
    t.inv(torch.tensor([[1.0, 3.0], [3.0, 7.0]]))  # the first real batch still initialises it
    torch.testing.assert_close(t.shift.detach(), torch.tensor([2.0, 5.0]))
