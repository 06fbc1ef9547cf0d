"""Each kernel of fastbp.kernels against its plain NumPy twin (fastbp.reference).

Tolerances, and why they are what they are
------------------------------------------
eps = np.finfo(dtype).eps is the machine epsilon; the unit roundoff is u = eps / 2.

Products. A dot product of length K computed in floating point, in any summation order,
satisfies |fl(x.y) - x.y| <= gamma_K * (|x|.|y|) with gamma_K = K*u / (1 - K*u) (Higham,
"Accuracy and Stability of Numerical Algorithms", 3.1). fastbp and NumPy's BLAS both err,
in different orders, so |fast - numpy| <= 2 * gamma_K * (|x|.|y|) ~ K * eps * (|x|.|y|).
We assert the bound the brief fixes, 2 * K * eps * (|A| @ |W| + |b|), elementwise; it
covers the bias as a (K+1)-th term (2*gamma_{K+1} ~ (K+1)*eps <= 2*K*eps for K >= 1) and
the O((K*u)^2) terms. Reductions over the batch (weight and bias gradients) use the
batch length B the same way.

Point functions. The piecewise-linear activations (identity, relu, leaky_relu, and their
derivatives) are the same single IEEE operations in fastbp and in NumPy, so those results
are compared with exact equality. The transcendental ones (sigmoid, tanh, gelu) go through
different libm / SIMD implementations, each accurate to a few ulps, and the compiler may
contract a*b+c into an FMA; we allow 8 * eps * (1 + |ref|) absolute (a few ulps of a
result of size |ref|, and a few ulps of 1 where a result is formed as 1 - a*a or 1 + erf).
gelu adds eps * |z|: 0.5 * z * (1 + erf(z / sqrt 2)) multiplies the rounding of (1 + erf),
about eps absolute, by |z|/2, and the float32 reference rounds z / sqrt(2) before erf.

The activation stage of dense_forward is checked on fastbp's own Z (whose error is bounded
by the product check), which isolates the epilogue: identity/relu/leaky_relu must then be
bit-exact.

Losses. See the comments above each bound helper (softmax, log-softmax, BCE, MSE).
Results that underflow to subnormals carry an absolute, not relative, error of about one
subnormal ulp per operation, hence a `4 * smallest_subnormal` term in relative bounds.

Threads. Every kernel gives each thread its own rows and fixes the order of every sum, so
n_threads=1 and n_threads=2 must give bit-identical results (np.array_equal).
"""

import numpy as np
import pytest

from fastbp import kernels, reference

DTYPES = [np.float32, np.float64]
HIDDEN = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]
PIECEWISE_LINEAR = {"identity", "relu", "leaky_relu"}
THREADS = [1, 2]

# (B, K, N): batch rows, layer inputs, layer outputs. 1, 7 and 33 are not multiples of any
# SIMD width (4, 8, 16 lanes) and leave remainder loops; (65, 257, 129) is 2.15M
# multiply-adds, above the 65536 at which the products start using threads.
SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 1), (33, 1, 7), (7, 7, 7), (33, 33, 33),
          (65, 257, 129)]
# (B, N) for the elementwise and loss kernels
SHAPES_2D = [(1, 1), (1, 7), (7, 33), (33, 7), (65, 129)]


def _id(shape):
    return "x".join(map(str, shape))


# -- tolerance helpers ----------------------------------------------------------------------


def eps_of(dtype):
    return float(np.finfo(dtype).eps)


def tiny_of(dtype):
    """Absolute slack for results in the subnormal range (about one ulp there per op)."""
    return 4 * float(np.finfo(dtype).smallest_subnormal)


def product_bound(dtype, X, Y, length, extra=None):
    """2 * length * eps * (|X| @ |Y| + |extra|): twice Higham's gamma_length (see the module
    docstring), elementwise, computed in float64 so the bound itself does not round."""
    absprod = np.abs(np.asarray(X, np.float64)) @ np.abs(np.asarray(Y, np.float64))
    if extra is not None:
        absprod = absprod + np.abs(np.asarray(extra, np.float64))
    return 2 * length * eps_of(dtype) * absprod


def activation_bound(name, z, ref, dtype):
    """|fast f(z) - reference f(z)| allowed for one point function (module docstring)."""
    if name in PIECEWISE_LINEAR:
        return np.zeros(np.shape(ref))
    eps = eps_of(dtype)
    ref = np.abs(np.asarray(ref, np.float64))
    bound = 8 * eps * (1 + ref)
    if name == "gelu":
        bound = bound + 8 * eps * np.abs(np.asarray(z, np.float64))
    return bound


def derivative_bound(name, deriv, dtype):
    """|fast f'(z) - reference f'(z)|: exact for the piecewise-linear activations, else a few
    ulps of 1 + |f'| (sigmoid a(1-a) and tanh 1-a*a may be FMA-contracted; gelu's
    derivative is evaluated in double by fastbp and in dtype by the reference)."""
    if name in PIECEWISE_LINEAR:
        return np.zeros(np.shape(deriv))
    return 8 * eps_of(dtype) * (1 + np.abs(np.asarray(deriv, np.float64)))


def softmax_rel_bound(Z, dtype):
    """Relative error allowed between fastbp's softmax and np.exp(_log_softmax(Z)).

    Reference, in dtype: s = z - max (error u|s|), exp (a few ulps), a sum of N terms
    (relative (N-1)u), L = log(sum) (absolute: the sum's relative error plus a few ulps of
    |L|), t = s - L (u|t|), exp(t) turns the absolute error of t into a relative one.
    fastbp: s rounded in dtype, exp and the division in double, two roundings to dtype.
    Summed and rounded up: 4 * eps * (N + 4 + |s| + |L|), with |t| <= |s| + |L|."""
    Z = np.asarray(Z, np.float64)
    s = Z - Z.max(axis=1, keepdims=True)
    L = np.log(np.exp(s).sum(axis=1, keepdims=True))
    return 4 * eps_of(dtype) * (Z.shape[1] + 4 + np.abs(s) + np.abs(L))


def log_softmax_abs_bound(Z, dtype):
    """Absolute error allowed in log softmax(Z)_c between the two loss computations.

    The reference forms z_c - m - L in dtype (errors as in softmax_rel_bound); fastbp forms
    m + log(sum exp(z - m)) - z_c in double, whose roundings scale with |m| and |z_c|
    (the extreme-logit test uses |z| up to 1e4). 4 * eps * (N + 4 + |z| + |m| + |L|) covers
    both, with |s| <= |z| + |m|."""
    Z = np.asarray(Z, np.float64)
    m = Z.max(axis=1, keepdims=True)
    L = np.log(np.exp(Z - m).sum(axis=1, keepdims=True))
    return 4 * eps_of(dtype) * (Z.shape[1] + 4 + np.abs(Z) + np.abs(m) + np.abs(L))


# -- data and assertions --------------------------------------------------------------------


def layer_data(dtype, B, K, N, seed=0):
    """A_in (B, K) ~ N(0, 1), W (K, N) ~ N(0, 4/K), b ~ U(-0.5, 0.5): Z = A_in @ W + b has
    entries of order 2, which spans the curved part of sigmoid, tanh and gelu."""
    rng = np.random.default_rng(seed)
    A_in = rng.standard_normal((B, K)).astype(dtype)
    W = (rng.standard_normal((K, N)) * (2 / np.sqrt(K))).astype(dtype)
    b = rng.uniform(-0.5, 0.5, N).astype(dtype)
    return A_in, W, b


def logits(dtype, B, N, seed=0, scale=3.0):
    """Z (B, N) ~ scale * N(0, 1) with exact +0.0 and -0.0 entries (the kink of relu)."""
    rng = np.random.default_rng(seed)
    Z = (rng.standard_normal((B, N)) * scale).astype(dtype)
    flat = Z.reshape(-1)
    flat[3::5] = 0.0
    flat[2::11] = -0.0
    return Z


def assert_within(got, want, bound, what):
    """|got - want| <= bound elementwise; on failure print the worst case and the first
    mismatches, as llm.c's test_gpt2.c does."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert np.isfinite(got).all(), f"{what}: non-finite values {got[~np.isfinite(got)][:5]}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = np.broadcast_to(np.asarray(bound, np.float64), err.shape)
    bad = err > bound
    if bad.any():
        idx = [tuple(int(v) for v in i) for i in np.argwhere(bad)[:5]]
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        lines = [f"  at {i}: got {got[i]!r}, want {want[i]!r}, |diff| {err[i]:.3e} > {bound[i]:.3e}"
                 for i in idx]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} outside the bound; worst at "
            f"{tuple(int(v) for v in worst)}: |diff| {err[worst]:.3e}, bound {bound[worst]:.3e}\n"
            + "\n".join(lines))


def assert_scalar_within(got, want, bound, what):
    assert np.isfinite(got), f"{what}: got {got}"
    assert abs(got - want) <= bound, (
        f"{what}: got {got!r}, want {want!r}, |diff| {abs(got - want):.3e} > {bound:.3e}")


def f_ref(name, Z):
    """The reference activation, softmax included."""
    if name == "softmax":
        return np.exp(reference._log_softmax(Z))
    return reference.ACTIVATION_FUNCTIONS[name][0](Z)


def df_ref(name, Z, A):
    return reference.ACTIVATION_FUNCTIONS[name][1](Z, A)


# -- dense_forward --------------------------------------------------------------------------


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("activation", HIDDEN + ["softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward(dtype, activation, shape, n_threads):
    B, K, N = shape
    A_in, W, b = layer_data(dtype, B, K, N, seed=K * 1000 + N)
    Z = np.full((B, N), np.nan, dtype)
    A_out = np.full((B, N), np.nan, dtype)
    kernels.dense_forward(Z, A_out, A_in, W, b, activation, n_threads=n_threads)

    Z_ref = A_in @ W + b
    assert_within(Z, Z_ref, product_bound(dtype, A_in, W, K, b), "Z")

    # the epilogue on fastbp's own Z (see the module docstring)
    A_ref = f_ref(activation, Z)
    if activation in PIECEWISE_LINEAR:
        assert np.array_equal(A_out, A_ref), f"A_out ({activation}) is not bit-exact"
    elif activation == "softmax":
        bound = np.abs(A_ref.astype(np.float64)) * softmax_rel_bound(Z, dtype) + tiny_of(dtype)
        assert_within(A_out, A_ref, bound, "A_out (softmax)")
        np.testing.assert_allclose(A_out.sum(axis=1, dtype=np.float64), 1.0,
                                   rtol=0, atol=2 * N * eps_of(dtype))
    else:
        assert_within(A_out, A_ref, activation_bound(activation, Z, A_ref, dtype),
                      f"A_out ({activation})")


# -- activation_forward / activation_backward -----------------------------------------------


@pytest.mark.parametrize("shape", SHAPES_2D, ids=_id)
@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_forward(dtype, activation, shape):
    B, N = shape
    Z = logits(dtype, B, N, seed=B * 100 + N)
    A = np.full((B, N), np.nan, dtype)
    kernels.activation_forward(A, Z, activation)
    A_ref = f_ref(activation, Z)
    if activation in PIECEWISE_LINEAR:
        assert np.array_equal(A, A_ref), f"{activation} is not bit-exact"
    else:
        assert_within(A, A_ref, activation_bound(activation, Z, A_ref, dtype), activation)

    # documented: A may be Z itself
    Z_inplace = Z.copy()
    kernels.activation_forward(Z_inplace, Z_inplace, activation)
    assert np.array_equal(Z_inplace, A), "in-place activation_forward differs"


@pytest.mark.parametrize("shape", SHAPES_2D, ids=_id)
@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_backward(dtype, activation, shape):
    B, N = shape
    Z = logits(dtype, B, N, seed=B * 100 + N + 1)
    A = f_ref(activation, Z)
    dA = np.random.default_rng(B + N).standard_normal((B, N)).astype(dtype)
    dZ = np.full((B, N), np.nan, dtype)
    kernels.activation_backward(dZ, dA, Z, A, activation)

    deriv = df_ref(activation, Z, A)
    dZ_ref = dA * deriv
    if activation in PIECEWISE_LINEAR:
        assert np.array_equal(dZ, dZ_ref), f"{activation}' is not bit-exact"
    else:
        # |dA| times the derivative's error, plus the final product's rounding (eps |dZ|)
        bound = (np.abs(dA.astype(np.float64)) * derivative_bound(activation, deriv, dtype)
                 + eps_of(dtype) * np.abs(dZ_ref.astype(np.float64)))
        assert_within(dZ, dZ_ref, bound, f"dZ ({activation})")

    # documented: dZ may be dA itself
    inplace = dA.copy()
    kernels.activation_backward(inplace, inplace, Z, A, activation)
    assert np.array_equal(inplace, dZ), "in-place activation_backward differs"


# -- output_gradient ------------------------------------------------------------------------

# (loss, output activation, target kind)
LOSS_CASES = ([("cross_entropy", "softmax", "labels"), ("cross_entropy", "softmax", "probs"),
               ("binary_cross_entropy", "sigmoid", "probs")]
              + [("mse", act, "values") for act in HIDDEN])


def _case_id(case):
    loss, act, kind = case
    return f"{loss}-{act}-{kind}"


def loss_targets(loss, kind, B, N, dtype, rng):
    """(y passed to fastbp, labels for the reference, Y for the reference)."""
    if kind == "labels":
        labels = rng.integers(0, N, B).astype(np.int64)
        return labels, labels, None
    if loss == "cross_entropy":
        Y = rng.dirichlet(np.ones(N), B).astype(dtype)
    elif loss == "binary_cross_entropy":
        # hard 0/1 targets and soft ones
        Y = rng.random((B, N))
        Y[:, ::2] = Y[:, ::2] > 0.5
        Y = Y.astype(dtype)
    else:
        Y = rng.standard_normal((B, N)).astype(dtype)
    return Y, None, Y


def accumulation_bound(terms, divisor):
    """Both fastbp (serially) and the reference (pairwise) add the loss terms in float64:
    2 * gamma_n * sum |t| <= n * eps64 * sum |t| for n terms, then divide by the batch."""
    terms = np.abs(np.asarray(terms, np.float64))
    return float(terms.size * eps_of(np.float64) * terms.sum() / divisor)


def output_gradient_bounds(loss, act, Z, A, labels, Y, dZ_ref, dtype):
    """(bound on the loss value, elementwise bound on dZ) for one case."""
    eps = eps_of(dtype)
    B, N = Z.shape
    Z64, A64 = Z.astype(np.float64), A.astype(np.float64)
    ref_abs = np.abs(dZ_ref.astype(np.float64))
    if loss == "cross_entropy":
        if labels is not None:
            Y64 = np.zeros((B, N))
            Y64[np.arange(B), labels] = 1.0
        else:
            Y64 = Y.astype(np.float64)
        # the loss is sum_c Y_c * (-log softmax(z)_c), averaged over rows
        value_bound = float((Y64 * log_softmax_abs_bound(Z, dtype)).sum() / B)
        value_bound += accumulation_bound(Y64 * reference._log_softmax(Z64), B)
        # dZ: fastbp multiplies by fl(1/B), the reference divides by B (<= 3u = 1.5 eps of
        # |dZ|); with probability rows the row mass is summed in double by fastbp and in
        # dtype by the reference (relative (N-1)u), times |A| * mass, and A * mass - Y
        # rounds once more on each side.
        dZ_bound = 2 * eps * ref_abs + tiny_of(dtype)
        if labels is None:
            mass = Y64.sum(axis=1, keepdims=True)
            dZ_bound = dZ_bound + eps * (N + 2) * A64 * mass / B
        return value_bound, dZ_bound
    if loss == "binary_cross_entropy":
        # max(z,0) - z*y + log1p(exp(-|z|)), in dtype by the reference and in double by
        # fastbp: one rounding per operation of terms of size |z|, |z y|, the result, and a
        # few ulps of the log1p(exp) term.
        Y64 = Y.astype(np.float64)
        lp = np.log1p(np.exp(-np.abs(Z64)))
        term = np.maximum(Z64, 0) - Z64 * Y64 + lp
        per_elem = 2 * eps * (np.abs(Z64) + np.abs(Z64 * Y64) + np.abs(term) + 8 * lp)
        value_bound = float(per_elem.sum() / Z.size) + accumulation_bound(term, Z.size)
        # dZ = (A - Y) / n: same subtraction, then fl(1/n) * x against x / n
        return value_bound, 2 * eps * ref_abs + tiny_of(dtype)
    # mse: diff = A - Y is the same dtype operation in both; the reference squares it in
    # dtype (one rounding, u relative), fastbp in double; both sum in double.
    diff = A64 - Y.astype(np.float64)
    value_bound = (float(2 * eps * (diff * diff).sum() / Z.size)
                   + accumulation_bound(diff * diff, Z.size))
    # dZ = diff * (fl(2/n) * f'(z)): same order in both, so only f' may differ
    deriv = df_ref(act, Z, A)
    dZ_bound = (np.abs(diff) * (2.0 / Z.size) * derivative_bound(act, deriv, dtype)
                + 2 * eps * ref_abs + tiny_of(dtype))
    return value_bound, dZ_bound


def check_output_gradient(loss, act, kind, Z, dtype, rng):
    B, N = Z.shape
    A = f_ref(act, Z)
    y, labels, Y = loss_targets(loss, kind, B, N, dtype, rng)
    dZ = np.full((B, N), np.nan, dtype)
    out_act = act if loss == "mse" else None
    value = kernels.output_gradient(dZ, Z, A, y, loss, out_act)

    net = reference.Network([N, N], activation="relu", loss=loss, output_activation=out_act,
                            dtype=dtype, seed=0)
    value_ref, dZ_ref = net._loss_and_output_grad(Z, A, labels, Y)
    value_bound, dZ_bound = output_gradient_bounds(loss, act, Z, A, labels, Y, dZ_ref, dtype)

    assert isinstance(value, float)
    assert_scalar_within(value, float(value_ref), value_bound, f"{loss} value")
    assert_within(dZ, dZ_ref, dZ_bound, f"{loss} dZ")
    return value, dZ, labels, Y


@pytest.mark.parametrize("shape", SHAPES_2D, ids=_id)
@pytest.mark.parametrize("case", LOSS_CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_gradient(dtype, case, shape):
    loss, act, kind = case
    B, N = shape
    rng = np.random.default_rng(B * 100 + N)
    Z = logits(dtype, B, N, seed=B * 100 + N + 7)
    check_output_gradient(loss, act, kind, Z, dtype, rng)


# |z| up to 1e4 (float64) or 80 (float32): exp(|z|) overflows in both dtypes, so only the
# stable formulas (max-shifted log-sum-exp, max(z,0) + log1p(exp(-|z|))) stay finite.
EXTREME = {np.float32: 80.0, np.float64: 1e4}


@pytest.mark.parametrize("shape", [(7, 33), (33, 7), (1, 2)], ids=_id)
@pytest.mark.parametrize("case", LOSS_CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_gradient_extreme_logits(dtype, case, shape):
    loss, act, kind = case
    B, N = shape
    limit = EXTREME[dtype]
    rng = np.random.default_rng(B * 100 + N + 11)
    Z = rng.uniform(-limit, limit, (B, N)).astype(dtype)
    flat = Z.reshape(-1)
    flat[::3] = limit
    flat[1::3] = -limit
    value, dZ, labels, Y = check_output_gradient(loss, act, kind, Z, dtype, rng)
    assert np.isfinite(value) and np.isfinite(dZ).all()

    # and against the stable formulas evaluated in float64 from the same inputs: fastbp
    # accumulates the loss in double, so the float64 bounds apply for both dtypes.
    Z64 = Z.astype(np.float64)
    if loss == "cross_entropy":
        m = Z64.max(axis=1, keepdims=True)
        logp = Z64 - m - np.log(np.exp(Z64 - m).sum(axis=1, keepdims=True))
        if labels is not None:
            Y64 = np.zeros((B, N))
            Y64[np.arange(B), labels] = 1.0
        else:
            Y64 = Y.astype(np.float64)
        want = float(-(Y64 * logp).sum() / B)
        bound = (float((Y64 * log_softmax_abs_bound(Z64, np.float64)).sum() / B)
                 + accumulation_bound(Y64 * logp, B))
        assert_scalar_within(value, want, bound, "cross_entropy vs float64 log-sum-exp")
    elif loss == "binary_cross_entropy":
        Y64 = Y.astype(np.float64)
        term = np.maximum(Z64, 0) - Z64 * Y64 + np.log1p(np.exp(-np.abs(Z64)))
        want = float(term.mean())
        # each side, in double: one rounding each of z*y and max(z,0) - z*y (size <= 2|z|),
        # a few ulps (8 eps) of log1p(exp(-|z|)) <= log 2, and one of the term itself
        bound = (float(2 * eps_of(np.float64)
                       * (4 * np.abs(Z64) + 8 + np.abs(term)).sum() / Z.size)
                 + accumulation_bound(term, Z.size))
        assert_scalar_within(value, want, bound, "binary_cross_entropy vs float64 formula")


# -- weight_gradient ------------------------------------------------------------------------


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_gradient(dtype, shape, n_threads):
    B, K, N = shape
    rng = np.random.default_rng(B * 10000 + K * 100 + N)
    A_in = rng.standard_normal((B, K)).astype(dtype)
    dZ = rng.standard_normal((B, N)).astype(dtype)
    dW = np.full((K, N), np.nan, dtype)
    db = np.full(N, np.nan, dtype)
    kernels.weight_gradient(dW, db, A_in, dZ, n_threads=n_threads)
    # both are reductions of length B over the batch
    assert_within(dW, A_in.T @ dZ, product_bound(dtype, A_in.T, dZ, B), "dW")
    assert_within(db, dZ.sum(0), product_bound(dtype, np.ones(B), dZ, B), "db")


# -- input_gradient -------------------------------------------------------------------------


def input_gradient_data(dtype, B, K, N, seed):
    rng = np.random.default_rng(seed)
    dZ = rng.standard_normal((B, N)).astype(dtype)
    W = (rng.standard_normal((K, N)) / np.sqrt(N)).astype(dtype)
    Z_in = logits(dtype, B, K, seed=seed + 1, scale=2.0)
    return dZ, W, Z_in


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES)
def test_input_gradient(dtype, activation, shape, n_threads):
    B, K, N = shape
    dZ, W, Z_in = input_gradient_data(dtype, B, K, N, seed=B * 10000 + K * 100 + N)
    A_in = f_ref(activation, Z_in)
    dZ_in = np.full((B, K), np.nan, dtype)
    kernels.input_gradient(dZ_in, dZ, W, Z_in, A_in, activation, n_threads=n_threads)

    P = dZ @ W.T
    D = df_ref(activation, Z_in, A_in)
    want = P * D
    # |P D (1+d1) - P' D' (1+d2)| <= |P - P'| (|D| + dD) + |P| dD + eps |P D|, with the
    # product's error |P - P'| from the dot-product bound (length N) and dD from the
    # derivative bound.
    p_bound = product_bound(dtype, dZ, W.T, N)
    d_bound = derivative_bound(activation, D, dtype)
    P64, D64 = np.abs(P.astype(np.float64)), np.abs(D.astype(np.float64))
    bound = p_bound * (D64 + d_bound) + P64 * d_bound + eps_of(dtype) * P64 * D64
    assert_within(dZ_in, want, bound, f"dZ_in ({activation})")


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_input_gradient_identity_default(dtype, shape, n_threads):
    B, K, N = shape
    dZ, W, _ = input_gradient_data(dtype, B, K, N, seed=B * 10000 + K * 100 + N + 3)
    dZ_in = np.full((B, K), np.nan, dtype)
    kernels.input_gradient(dZ_in, dZ, W, n_threads=n_threads)
    assert_within(dZ_in, dZ @ W.T, product_bound(dtype, dZ, W.T, N), "dZ_in (no Z_in/A_in)")


# -- sgd_update -----------------------------------------------------------------------------

# 60000 elements is above the 32768 at which the update starts using threads
PARAM_SHAPES = [(1,), (7,), (33,), (7, 33), (65, 257), (300, 200)]


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("lr", [0.1, 0.37])
@pytest.mark.parametrize("shape", PARAM_SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update(dtype, shape, lr, n_threads):
    rng = np.random.default_rng(int(np.prod(shape)))
    param = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    # fl(param - fl(fl(lr) * grad)) in dtype, exactly as the reference's W -= lr * dW
    want = param - dtype(lr) * grad
    kernels.sgd_update(param, grad, lr, n_threads=n_threads)
    assert param.dtype == np.dtype(dtype) and param.shape == shape
    assert np.array_equal(param, want), (
        f"sgd_update not exact: max |diff| {np.max(np.abs(param - want)):.3e}")


# -- thread count does not change a bit -----------------------------------------------------

BIG = (128, 300, 200)  # 7.7M multiply-adds, far above the threading threshold


def run_threads(fn):
    """fn(n_threads) -> tuple of arrays, for 1 and 2 threads."""
    return fn(1), fn(2)


@pytest.mark.parametrize("activation", HIDDEN + ["softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_threads_bit_identical(dtype, activation):
    B, K, N = BIG
    A_in, W, b = layer_data(dtype, B, K, N, seed=42)

    def fn(nt):
        Z, A = np.empty((B, N), dtype), np.empty((B, N), dtype)
        kernels.dense_forward(Z, A, A_in, W, b, activation, n_threads=nt)
        return Z, A

    (Z1, A1), (Z2, A2) = run_threads(fn)
    assert np.array_equal(Z1, Z2) and np.array_equal(A1, A2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_gradient_threads_bit_identical(dtype):
    B, K, N = BIG
    rng = np.random.default_rng(43)
    A_in = rng.standard_normal((B, K)).astype(dtype)
    dZ = rng.standard_normal((B, N)).astype(dtype)

    def fn(nt):
        dW, db = np.empty((K, N), dtype), np.empty(N, dtype)
        kernels.weight_gradient(dW, db, A_in, dZ, n_threads=nt)
        return dW, db

    (dW1, db1), (dW2, db2) = run_threads(fn)
    assert np.array_equal(dW1, dW2) and np.array_equal(db1, db2)


@pytest.mark.parametrize("activation", [None] + HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES)
def test_input_gradient_threads_bit_identical(dtype, activation):
    B, K, N = BIG
    dZ, W, Z_in = input_gradient_data(dtype, B, K, N, seed=44)

    def fn(nt):
        dZ_in = np.empty((B, K), dtype)
        if activation is None:
            kernels.input_gradient(dZ_in, dZ, W, n_threads=nt)
        else:
            kernels.input_gradient(dZ_in, dZ, W, Z_in, f_ref(activation, Z_in), activation,
                                   n_threads=nt)
        return dZ_in

    d1, d2 = run_threads(fn)
    assert np.array_equal(d1, d2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_threads_bit_identical(dtype):
    rng = np.random.default_rng(45)
    param = rng.standard_normal((300, 200)).astype(dtype)
    grad = rng.standard_normal((300, 200)).astype(dtype)

    def fn(nt):
        p = param.copy()
        kernels.sgd_update(p, grad, 0.05, n_threads=nt)
        return p

    p1, p2 = run_threads(fn)
    assert np.array_equal(p1, p2)


# -- softmax's exp in float32 (src/expf.h) ----------------------------------------------------

def _expf_nonpos(x):
    from fastbp import _kernels
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _kernels.expf_nonpos(x, out)
    return out


def test_softmax_expf_within_one_ulp_of_the_exact_exp():
    # the exhaustive check over every float in [-87.34, 0] found 0.982 ulp at worst (at
    # -81.3947906); here a dense sweep, random points, and the neighbourhood of that worst
    # case, against double exp rounded to float32's spacing there
    rng = np.random.default_rng(0)
    worst = np.float32(-81.3947906)
    x = np.concatenate([
        np.linspace(-87.336, 0, 2_000_001, dtype=np.float32),
        -(rng.random(1_000_000) * 87.336).astype(np.float32),
        -(rng.random(100_000) * 1e-3).astype(np.float32),         # near 0: r tiny
        np.nextafter(worst, np.float32(0)) - np.arange(-500, 500, dtype=np.float32)
        * np.spacing(worst),
    ])
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    err = np.abs(_expf_nonpos(x) - exact) / ulp
    assert err.max() < 1.0, (err.max(), x[err.argmax()])


def test_softmax_expf_edges():
    x = np.array([0.0, -0.0, -np.inf, np.nan, -87.34, -88.0, -1e30, -np.finfo(np.float32).max,
                  -87.3365, -np.finfo(np.float32).tiny], dtype=np.float32)
    y = _expf_nonpos(x)
    assert y[0] == 1.0 and y[1] == 1.0          # exactly: lse_from_softmax relies on it
    assert y[2] == 0.0 and np.isnan(y[3])
    assert np.all(y[4:8] == 0.0)                # below the smallest normal result: 0
    assert y[8] >= np.finfo(np.float32).tiny / 2 and y[8] < 1.2e-38
    assert y[9] == 1.0
    # a loop of odd length, so that the vectorized body and its scalar tail both run
    z = -np.abs(np.random.default_rng(1).standard_normal(37) * 20).astype(np.float32)
    np.testing.assert_array_equal(_expf_nonpos(z), np.array([_expf_nonpos(v[None])[0] for v in z]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 2, 7, 10, 16, 17])
def test_softmax_blocks_equal_the_row_by_row_twin(target, dtype, N):
    # the forward pass takes narrow float32 rows eight at a time, as columns, in vector
    # code of each SIMD target (src/softmax.h); each row must come out as softmax_row
    # makes it, bit for bit, with whole blocks, a partial block after them, and rows with ties,
    # huge and tiny logits, -inf, +inf and NaN (float64 rows always go one by one)
    from fastbp import _kernels
    rng = np.random.default_rng(N)
    for B in (1, 7, 8, 9, 33):
        Z = (rng.standard_normal((B, N)) * 30).astype(dtype)
        Z[0, :] = 3.0                                   # ties: the first maximum
        if B > 2:
            Z[1, 0] = np.finfo(dtype).max
            Z[2, -1] = -np.inf
        if B > 4:
            Z[3, :] = -np.inf                           # every logit -inf: NaN both ways
            Z[4, N // 2] = np.nan
        if B > 10:                                      # in the second block
            Z[9, 0] = np.nan                            # a NaN first: it stays the max
            Z[10, -1] = np.inf
        want = np.empty_like(Z)
        got = np.empty_like(Z)
        _kernels.softmax(want, Z, False)
        _kernels.softmax(got, Z, True)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8),
                                      err_msg=f"B={B}, N={N}")
