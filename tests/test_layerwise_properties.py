"""Property-based tests of the layer-wise autograd Functions and rules (hypothesis).

Over shapes, leading axes, dtypes, convolution settings and rules:

* with ``F = W`` and ``s = 1`` the Functions are backpropagation: every gradient equals autograd's
  through ``F.linear`` / ``F.convNd``;
* with ``F`` random the gradients equal a float64 reference written from the equations,
  ``dL/dh = s g F`` (``torch.nn.grad.conv*_input`` with ``F`` for convolutions), ``dW = g^T h``,
  ``db = sum g``, and ``dF = dW`` when ``F`` requires grad (Kolen-Pollack);
* every rule applied to an ``nn.Linear`` hands the input ``g B^T`` with ``B^T`` its documented
  feedback, whatever the leading axes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from feedback_alignment.functional import ConvFeedbackFn, LinearFeedbackFn
from feedback_alignment.rules import FA, KolenPollack, WeightMirror, brSF, frSF, uSF

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
DTYPES = st.sampled_from([torch.float32, torch.float64])
TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
}


def _tensor(shape, dtype, seed, grad=False):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(grad)
    )


linear_cases = st.fixed_dictionaries(
    {
        "lead": st.lists(st.integers(1, 3), min_size=0, max_size=3),
        "inp": st.integers(1, 6),
        "out": st.integers(1, 6),
        "bias": st.booleans(),
        "dtype": DTYPES,
        "scale": st.sampled_from([1.0, 0.5, 3.0]),
        "seed": st.integers(0, 2**16),
    }
)


@SETTINGS
@given(linear_cases)
def test_linear_function_with_f_equal_w_is_autograd(case):
    dtype, seed = case["dtype"], case["seed"]
    x = _tensor((*case["lead"], case["inp"]), dtype, seed, grad=True)
    weight = _tensor((case["out"], case["inp"]), dtype, seed + 1, grad=True)
    bias = _tensor((case["out"],), dtype, seed + 2, grad=True) if case["bias"] else None
    g = _tensor((*case["lead"], case["out"]), dtype, seed + 3)
    leaves = [t for t in (x, weight, bias) if t is not None]
    ours = torch.autograd.grad(LinearFeedbackFn.apply(x, weight, bias, weight.detach()), leaves, g)
    expected = torch.autograd.grad(F.linear(x, weight, bias), leaves, g)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


@SETTINGS
@given(linear_cases, st.booleans())
def test_linear_function_with_random_f_matches_the_float64_equations(case, learn_feedback):
    dtype, seed = case["dtype"], case["seed"]
    x = _tensor((*case["lead"], case["inp"]), dtype, seed, grad=True)
    weight = _tensor((case["out"], case["inp"]), dtype, seed + 1, grad=True)
    bias = _tensor((case["out"],), dtype, seed + 2, grad=True) if case["bias"] else None
    feedback = _tensor((case["out"], case["inp"]), dtype, seed + 4, grad=learn_feedback)
    g = _tensor((*case["lead"], case["out"]), dtype, seed + 3)
    out = LinearFeedbackFn.apply(x, weight, bias, feedback, case["scale"])
    leaves = [t for t in (x, weight, bias, feedback) if t is not None and t.requires_grad]
    grads = dict(zip(map(id, leaves), torch.autograd.grad(out, leaves, g), strict=True))
    g64 = g.double().reshape(-1, case["out"])
    x64 = x.detach().double().reshape(-1, case["inp"])
    expected_x = case["scale"] * g64 @ feedback.detach().double()
    torch.testing.assert_close(
        grads[id(x)].double().reshape(-1, case["inp"]), expected_x, **TOL[dtype]
    )
    torch.testing.assert_close(grads[id(weight)].double(), g64.T @ x64, **TOL[dtype])
    if bias is not None:
        torch.testing.assert_close(grads[id(bias)].double(), g64.sum(0), **TOL[dtype])
    if learn_feedback:
        torch.testing.assert_close(grads[id(feedback)].double(), g64.T @ x64, **TOL[dtype])


conv_cases = st.fixed_dictionaries(
    {
        "dims": st.sampled_from([1, 2, 3]),
        "batch": st.integers(1, 2),
        "groups": st.sampled_from([1, 2]),
        "per_group_in": st.integers(1, 2),
        "per_group_out": st.integers(1, 2),
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 2),
        "dilation": st.integers(1, 2),
        "extra": st.integers(0, 3),
        "bias": st.booleans(),
        "dtype": DTYPES,
        "scale": st.sampled_from([1.0, 0.25]),
        "seed": st.integers(0, 2**16),
    }
)

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: None}


def _conv_setup(case):
    dims, dtype, seed = case["dims"], case["dtype"], case["seed"]
    channels_in = case["groups"] * case["per_group_in"]
    channels_out = case["groups"] * case["per_group_out"]
    reach = case["dilation"] * (case["kernel"] - 1) + 1
    size = max(reach - 2 * case["padding"], 1) + case["extra"]
    x = _tensor((case["batch"], channels_in, *(size,) * dims), dtype, seed, grad=True)
    kernel = (channels_out, case["per_group_in"], *(case["kernel"],) * dims)
    weight = _tensor(kernel, dtype, seed + 1, grad=True)
    bias = _tensor((channels_out,), dtype, seed + 2, grad=True) if case["bias"] else None
    conv = (
        (case["stride"],) * dims,
        (case["padding"],) * dims,
        (case["dilation"],) * dims,
        case["groups"],
    )
    return x, weight, bias, conv


@SETTINGS
@given(conv_cases)
def test_conv_function_with_f_equal_w_is_autograd(case):
    x, weight, bias, conv = _conv_setup(case)
    reference = CONV[case["dims"]](x, weight, bias, *conv)
    g = _tensor(reference.shape, case["dtype"], case["seed"] + 3)
    leaves = [t for t in (x, weight, bias) if t is not None]
    expected = torch.autograd.grad(reference, leaves, g)
    out = ConvFeedbackFn.apply(x, weight, bias, weight.detach(), *conv)
    torch.testing.assert_close(out, reference.detach(), **TOL[case["dtype"]])
    for a, b in zip(torch.autograd.grad(out, leaves, g), expected, strict=True):
        torch.testing.assert_close(a, b, **TOL[case["dtype"]])


@SETTINGS
@given(conv_cases, st.booleans())
def test_conv_function_with_random_f_matches_the_float64_references(case, learn_feedback):
    x, weight, bias, conv = _conv_setup(case)
    dtype, dims = case["dtype"], case["dims"]
    feedback = _tensor(weight.shape, dtype, case["seed"] + 4, grad=learn_feedback)
    out = ConvFeedbackFn.apply(x, weight, bias, feedback, *conv, case["scale"])
    g = _tensor(out.shape, dtype, case["seed"] + 3)
    leaves = [t for t in (x, weight, bias, feedback) if t is not None and t.requires_grad]
    grads = dict(zip(map(id, leaves), torch.autograd.grad(out, leaves, g), strict=True))
    stride, padding, dilation, groups = conv
    x64, g64 = x.detach().double(), g.double()
    # dL/dh: the transposed convolution of g with F (as if F were the weight), in float64
    probe = x64.clone().requires_grad_()
    through_f = CONV[dims](probe, feedback.detach().double(), None, *conv)
    (expected_x,) = torch.autograd.grad(through_f, probe, g64)
    if CONV_INPUT[dims] is not None:  # and by torch.nn.grad's own formula
        direct = CONV_INPUT[dims](
            x.shape, feedback.detach().double(), g64, stride, padding, dilation, groups
        )
        torch.testing.assert_close(direct, expected_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[id(x)].double(), case["scale"] * expected_x, **TOL[dtype])
    w64 = weight.detach().double().requires_grad_()
    (expected_w,) = torch.autograd.grad(CONV[dims](x64, w64, None, *conv), w64, g64)
    torch.testing.assert_close(grads[id(weight)].double(), expected_w, **TOL[dtype])
    if bias is not None:
        sum_dims = [0, *range(2, 2 + dims)]
        torch.testing.assert_close(grads[id(bias)].double(), g64.sum(sum_dims), **TOL[dtype])
    if learn_feedback:
        torch.testing.assert_close(grads[id(feedback)].double(), expected_w, **TOL[dtype])


RULES = {
    "FA": lambda: FA(seed=2),
    "FA-uniform-match": lambda: FA(distribution="uniform", norm="match", seed=2),
    "uSF": lambda: uSF(),
    "frSF": lambda: frSF(distribution="rademacher", seed=2),
    "brSF": lambda: brSF(seed=2),
    "KP": lambda: KolenPollack(seed=2),
    "WM": lambda: WeightMirror(seed=2),
}


@SETTINGS
@given(
    st.sampled_from(list(RULES)),
    st.lists(st.integers(1, 3), min_size=0, max_size=3),
    st.integers(1, 5),
    st.integers(1, 5),
    DTYPES,
    st.integers(0, 2**16),
)
def test_every_rule_hands_the_input_g_times_its_feedback(name, lead, inp, out, dtype, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(inp, out).to(dtype)
    rule = RULES[name]()
    rule.apply(layer)
    x = _tensor((*lead, inp), dtype, seed, grad=True)
    g = _tensor((*lead, out), dtype, seed + 1)
    layer(x).backward(g)
    feedback = rule.feedback_matrices(layer)[""].double()
    g64 = g.double().reshape(-1, out)
    x64 = x.detach().double().reshape(-1, inp)
    tol = TOL[dtype]
    torch.testing.assert_close(x.grad.double().reshape(-1, inp), g64 @ feedback, **tol)
    torch.testing.assert_close(layer.weight.grad.double(), g64.T @ x64, **tol)
    torch.testing.assert_close(layer.bias.grad.double(), g64.sum(0), **tol)
    assert feedback.shape == layer.weight.shape
