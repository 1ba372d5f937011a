"""Example-level DP-SGD on the client, against independent oracles.

- per-row clipped gradients (Opacus hooks, ghost clipping, functorch) against gradients
  computed one row at a time with plain autograd and clipped one by one;
- the noise's standard deviation against ``noise_multiplier * clipping_norm``;
- what the client reports against the plan and against Opacus's own accountant;
- refusals, replay determinism, and a clean workspace after each client.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.messages import GlobalModelMessage
from ffm_private.models import (
    PERSONAL,
    SHARED,
    FedMFRecommender,
    FFMRecommender,
    params_of,
    state_of,
)
from ffm_private.privacy import AccountingError, NoiseSource, PrivacyPlan, UnsupportedClaimError
from ffm_private.privacy.dpsgd import (
    DPStepper,
    ExampleDP,
    RowBatch,
    example_plan_inputs,
    has_opacus_traces,
    history_free_frozen,
    make_rows,
    row_losses,
    run_dp_phase,
    torch_generator,
)

N_ITEMS = 60


def _ffm(seed: int = 0) -> FFMRecommender:
    torch.manual_seed(seed)
    m = FFMRecommender(N_ITEMS, 1, dim=16, history_length=5, global_rank=4, personal_rank=3)
    with torch.no_grad():  # non-trivial weights everywhere, so every gradient is non-zero
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m.train()


def _fedmf(seed: int = 0) -> FedMFRecommender:
    torch.manual_seed(seed)
    m = FedMFRecommender(N_ITEMS, 1, dim=16)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m.train()


def _phase_params(model: torch.nn.Module, phase: str) -> dict[str, torch.nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    group = PERSONAL if phase == "personal" else SHARED
    frozen = set(history_free_frozen(model)) if phase == "shared" else set()
    params = {k: p for k, p in params_of(model, group).items() if k not in frozen}
    for p in params.values():
        p.requires_grad_(True)
    return params


def _rows(seed: int, n: int = 12, history: bool = False) -> RowBatch:
    gen = torch.Generator().manual_seed(seed)
    positives = torch.randint(0, N_ITEMS, (n,), generator=gen)
    rows = make_rows(positives, N_ITEMS, 5, 4, gen)
    items = rows.items.clone()
    items[0, 2] = items[0, 1]  # a repeated negative: two gradients on one embedding row
    hist = rows.history
    if history:
        hist = torch.randint(0, N_ITEMS + 1, hist.shape, generator=gen)
    return dataclasses.replace(rows, items=items, history=hist)


def _oracle_clipped_sum(model: torch.nn.Module, names: list[str], rows: RowBatch,
                        clip: float) -> tuple[list[torch.Tensor], np.ndarray]:
    """One row at a time with plain autograd, clipped one by one, summed."""
    params = [dict(model.named_parameters())[n] for n in names]
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms = []
    for j in range(len(rows)):
        one = RowBatch(rows.history[j:j + 1], rows.items[j:j + 1], rows.owner[j:j + 1],
                       rows.labels[j:j + 1])
        grads = torch.autograd.grad(row_losses(model, one).sum(), params)
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        norms.append(norm)
        factor = min(1.0, clip / norm)
        for t, g in zip(total, grads, strict=True):
            t += factor * g.double()
    return total, np.array(norms)


CASES = [
    ("ffm", "shared", "hooks", False),
    ("ffm", "shared", "ghost", False),
    ("ffm", "shared", "functorch", False),
    ("ffm", "personal", "functorch", False),
    ("fedmf", "shared", "ghost", False),
    ("fedmf", "shared", "hooks", False),
    ("fedmf", "personal", "functorch", False),
    ("ffm", "all-shared", "hooks", True),   # the user adapter with real histories, for the engine
    ("ffm", "all-shared", "ghost", True),
]


@pytest.mark.parametrize(("kind", "phase", "engine", "history"), CASES)
def test_clipped_sum_matches_row_by_row_oracle(kind, phase, engine, history):
    model = _ffm() if kind == "ffm" else _fedmf()
    rows = _rows(1, history=history)
    if phase == "all-shared":
        for p in model.parameters():
            p.requires_grad_(False)
        params = params_of(model, SHARED)
        for p in params.values():
            p.requires_grad_(True)
    else:
        params = _phase_params(model, phase)
    names = list(params)
    reference = copy.deepcopy(model)  # no Opacus anywhere near it
    _, norms = _oracle_clipped_sum(reference, names, rows, 1e9)
    clip = float(np.median(norms))  # about half the rows are clipped
    expected, _ = _oracle_clipped_sum(reference, names, rows, clip)
    before = {k: p.detach().clone() for k, p in params.items()}
    # SGD with lr 1, no noise, divisor 1: the parameter change is minus the clipped sum
    with DPStepper(model, params, noise_multiplier=0.0, clipping_norm=clip,
                   expected_batch_size=1.0, lr=1.0, generator=torch.Generator().manual_seed(0),
                   engine=engine, optimizer="sgd") as stepper:
        assert stepper.engine == engine
        stepper.step(rows)
    assert (norms > clip).sum() >= 3 and (norms < clip).sum() >= 3
    for (name, p), want in zip(params.items(), expected, strict=True):
        got = (before[name] - p.detach()).double()
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=f"{kind} {phase} {engine}: {name}")
    assert has_opacus_traces(model) == []


def test_oracle_would_catch_unclipped_or_per_parameter_clipping():
    """The oracle comparison above is sharp: a plausible mis-clipping differs clearly."""
    model = _fedmf()
    rows = _rows(2)
    params = _phase_params(model, "shared")
    names = list(params)
    _, norms = _oracle_clipped_sum(model, names, rows, 1e9)
    clip = float(np.median(norms))
    right, _ = _oracle_clipped_sum(model, names, rows, clip)
    wrong, _ = _oracle_clipped_sum(model, names, rows, 1e9)
    gap = max(float((a - b).abs().max()) for a, b in zip(right, wrong, strict=True))
    assert gap > 1e-2


@pytest.mark.parametrize(("kind", "phase", "engine"), [
    ("ffm", "shared", "hooks"), ("ffm", "shared", "ghost"), ("ffm", "personal", "functorch"),
    ("fedmf", "shared", "ghost"), ("fedmf", "shared", "hooks"),
])
def test_noise_std_is_noise_multiplier_times_clipping_norm(kind, phase, engine):
    """Empty samples (no data gradient): each step moves the parameters by noise alone."""
    model = _ffm() if kind == "ffm" else _fedmf()
    params = _phase_params(model, phase)
    sigma, clip, divisor, steps = 1.3, 0.7, 4.0, 60
    draws = []
    with DPStepper(model, params, noise_multiplier=sigma, clipping_norm=clip,
                   expected_batch_size=divisor, lr=1.0,
                   generator=torch.Generator().manual_seed(5), engine=engine,
                   optimizer="sgd") as stepper:
        for _ in range(steps):
            before = torch.cat([p.detach().flatten().clone() for p in params.values()])
            stepper.step(None)
            after = torch.cat([p.detach().flatten() for p in params.values()])
            draws.append((before - after).double().numpy() * divisor)
    x = np.concatenate(draws)
    assert x.size >= 5000
    want = sigma * clip
    assert abs(x.std() - want) < 0.03 * want, (x.std(), want)
    assert abs(x.mean()) < 4 * want / np.sqrt(x.size)
    # Gaussian, not e.g. uniform noise of the same variance: excess kurtosis near 0
    kurt = float(((x - x.mean()) ** 4).mean() / x.var() ** 2 - 3.0)
    assert abs(kurt) < 0.25, kurt


def test_noise_is_added_once_per_step_not_per_row():
    """FFM with a zero user representation: every row's shared gradient is exactly zero, so a
    full phase with data moves the shared adapter by sigma*C/divisor per step, whatever the
    number of rows sampled."""
    model = _ffm()
    with torch.no_grad():
        model.personal.user_emb.zero_()
    params = _phase_params(model, "shared")
    before = torch.cat([p.detach().flatten().clone() for p in params.values()])
    sigma, clip, divisor, steps = 0.9, 2.0, 8.0, 50
    out = run_dp_phase(model, params, np.arange(40) % N_ITEMS, noise_multiplier=sigma,
                       clipping_norm=clip, sample_rate=0.5, steps=steps,
                       expected_batch_size=divisor, lr=1.0, num_negatives=4,
                       generator=torch.Generator().manual_seed(3), optimizer="sgd")
    assert out.rows > 500  # the rows were really there
    moved = (torch.cat([p.detach().flatten() for p in params.values()]) - before).double()
    # sum of `steps` independent N(0, (sigma C / divisor)^2) per coordinate
    want = sigma * clip / divisor * np.sqrt(steps)
    got = float(moved.std())
    assert abs(got - want) < 0.1 * want, (got, want)


# -- rows: one interaction, one row --------------------------------------------------------
@pytest.mark.parametrize(("kind", "phase", "engine"), [
    ("ffm", "shared", "hooks"), ("fedmf", "shared", "ghost"), ("ffm", "personal", "functorch"),
])
def test_noise_is_not_recoverable_from_the_torch_generator(kind, phase, engine):
    """The adversary knows the MT19937 state of the round's ``torch.Generator`` (its 64-bit
    seed, or 624 observed outputs) and replays Opacus's noise draw with it. It must recover
    nothing: the noise comes from the secure stream, not from that generator."""
    model = _ffm() if kind == "ffm" else _fedmf()
    params = _phase_params(model, phase)
    gen = torch_generator(NoiseSource(test_seed=4), 2, 9)
    spy = torch.Generator()
    spy.set_state(gen.get_state())
    sigma, clip = 1.0, 1.0
    with DPStepper(model, params, noise_multiplier=sigma, clipping_norm=clip,
                   expected_batch_size=1.0, lr=1.0, generator=gen, engine=engine,
                   optimizer="sgd") as stepper:
        before = [p.detach().clone() for p in params.values()]
        stepper.step(None)
        noise = torch.cat([(b - p.detach()).flatten() for b, p in
                           zip(before, params.values(), strict=True)]).double()
    guess = torch.cat([torch.normal(0.0, sigma * clip, p.shape, generator=spy).flatten()
                       for p in params.values()]).double()
    assert noise.numel() > 50 and float(noise.std()) == pytest.approx(sigma * clip, rel=0.35)
    corr = float(np.corrcoef(noise.numpy(), guess.numpy())[0, 1])
    assert abs(corr) < 5 / np.sqrt(noise.numel()), corr


def test_step_noise_is_the_secure_float64_draw():
    """A second generator for the same (round, client) replays the noise stream: the step moved
    the parameters by exactly that float64 draw (cast to float32)."""
    model = _ffm()
    params = _phase_params(model, "shared")
    source = NoiseSource(test_seed=4)
    sigma, clip = 1.3, 0.7
    with DPStepper(model, params, noise_multiplier=sigma, clipping_norm=clip,
                   expected_batch_size=1.0, lr=1.0, generator=torch_generator(source, 2, 9),
                   optimizer="sgd") as stepper:
        before = [p.detach().clone() for p in params.values()]
        stepper.step(None)
        moved = [b - p.detach() for b, p in zip(before, params.values(), strict=True)]
    replay = torch_generator(source, 2, 9).noise
    for p, m in zip(params.values(), moved, strict=True):
        want = replay.normal(0.0, sigma * clip, tuple(p.shape))
        np.testing.assert_allclose(m.double().numpy(), want, rtol=1e-5, atol=1e-6)


def test_sample_and_negatives_are_not_recoverable_from_the_torch_generator(monkeypatch):
    """The same adversary replays Opacus's Poisson sampler and the negatives' ``randint``: it
    must learn neither which interactions the step sampled nor the negatives they got."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    import ffm_private.privacy.dpsgd as dpsgd

    model = _ffm()
    params = _phase_params(model, "shared")
    gen = torch_generator(NoiseSource(test_seed=4), 2, 9)
    spy = torch.Generator()
    spy.set_state(gen.get_state())
    seen: list[tuple[list[int], torch.Tensor]] = []
    real = dpsgd.make_rows

    def record(positives, *args, **kwargs):
        rows = real(positives, *args, **kwargs)
        seen.append((sorted(int(x) for x in positives), rows.items))
        return rows

    monkeypatch.setattr(dpsgd, "make_rows", record)
    n, k = 200, 2
    positives = np.arange(n) % N_ITEMS
    run_dp_phase(model, params, positives, noise_multiplier=1.0, clipping_norm=1.0,
                 sample_rate=0.5, steps=1, expected_batch_size=1.0, lr=0.1, num_negatives=k,
                 generator=gen, optimizer="sgd")
    guess = next(iter(UniformWithReplacementSampler(num_samples=n, sample_rate=0.5,
                                                    generator=spy, steps=1)))
    assert len(seen) == 1 and 60 < len(seen[0][0]) < 140
    sampled, items = seen[0]
    assert sampled != sorted(int(positives[i]) for i in guess)
    # even told the true sample, the adversary's negatives (MT19937 replay) are wrong
    neg = torch.randint(0, N_ITEMS - 1, (len(sampled), k), generator=spy)
    neg = neg + (neg >= items[:, :1]).long()
    assert float((neg == items[:, 1:]).double().mean()) < 0.1


def test_rows_read_only_their_own_interaction():
    gen = torch.Generator().manual_seed(0)
    positives = torch.full((20000,), 3)
    rows = make_rows(positives, 10, 6, 5, gen)
    assert torch.equal(rows.items[:, 0], positives)
    assert bool((rows.history == 10).all())  # padding only: no other interaction is read
    negs = rows.items[:, 1:].flatten()
    assert not bool((negs == 3).any())
    counts = np.bincount(negs.numpy(), minlength=10)
    assert counts[3] == 0
    others = np.delete(counts, 3)
    expected = negs.numel() / 9
    chi2 = float(((others - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-square, 8 degrees of freedom, p = 0.0005


def test_training_never_feeds_a_history(monkeypatch):
    import ffm_private.privacy.dpsgd as dpsgd

    model = _ffm()
    built: list[RowBatch] = []

    def recording_make_rows(*args, **kwargs):
        built.append(make_rows(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(dpsgd, "make_rows", recording_make_rows)
    plain_calls: list[torch.Tensor] = []  # forward calls outside torch.func (shared phase)
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    handle = model.register_forward_pre_hook(
        lambda _m, args: None if wrapped(args[0]) else plain_calls.append(args[0]))
    message = GlobalModelMessage(1, state_of(model, SHARED))
    personal = {k: v[0] for k, v in state_of(model, PERSONAL).items()}
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.3, steps=4,
                   expected_batch_size=5.0, personal_sample_rate=0.3, personal_steps=4)
    train_client(model, message, personal, ClientData(0, np.arange(30)),
                 LocalTrainingConfig(example_dp=dp), 0, generator=torch.Generator())
    handle.remove()
    assert len(built) >= 6 and plain_calls
    assert all(bool((r.history == N_ITEMS).all()) for r in built)
    assert all(bool((h == N_ITEMS).all()) for h in plain_calls)


# -- the client step, the plan, and Opacus's accountant ---------------------------------------
def _client_setup(kind: str = "ffm"):
    model = _ffm() if kind == "ffm" else _fedmf()
    message = GlobalModelMessage(3, state_of(model, SHARED))
    personal = {k: v[0] for k, v in state_of(model, PERSONAL).items()}
    return model, message, personal


def test_plan_inputs_are_exact():
    cfg = LocalTrainingConfig(batch_size=16, local_epochs=1, personal_epochs=2)
    got = example_plan_inputs([20, 40, 65, 100, 300], cfg, reference_size=65)
    assert got.reference_size == 65
    # the users' sizes size nothing: the public reference does
    assert example_plan_inputs([1, 1000], cfg, reference_size=65) == got
    assert got.example_rate == 16 / 65 and got.personal_rate == 16 / 65
    assert got.local_steps == 5 and got.personal_steps == 9  # ceil(65/16), ceil(130/16)
    assert got.expected_batch_size == pytest.approx(16.0)
    assert got.local_steps * got.example_rate >= 1 and got.personal_steps * got.personal_rate >= 2
    exact = example_plan_inputs([64], cfg, reference_size=64)
    assert (exact.local_steps, exact.personal_steps) == (4, 8)
    big = example_plan_inputs([10, 12], LocalTrainingConfig(batch_size=256), reference_size=11)
    assert (big.example_rate, big.local_steps, big.expected_batch_size) == (1.0, 1, 11.0)
    none = example_plan_inputs([30], cfg, has_personal=False)
    assert none.personal_steps == 0 and none.plan_kwargs()["personal_rate"] == 0.0
    assert example_plan_inputs([30], cfg, reference_size=160).example_rate == 0.1


@pytest.mark.parametrize("kind", ["ffm", "fedmf"])
def test_client_runs_what_the_plan_charges(kind):
    cfg = LocalTrainingConfig(batch_size=8, local_epochs=1, personal_epochs=1)
    sizes = [25, 30, 40]
    inputs = example_plan_inputs(sizes, cfg)
    plan = PrivacyPlan.for_noise(1.1, mode="example", delta=1e-5, rounds=10, client_rate=0.5,
                                 **inputs.plan_kwargs())
    dp = ExampleDP.from_plan(plan, clipping_norm=0.5, expected_batch_size=inputs.expected_batch_size)
    model, message, personal = _client_setup(kind)
    accountant = RDPAccountant()
    result = train_client(model, message, personal, ClientData(7, np.arange(sizes[0])),
                          dataclasses.replace(cfg, example_dp=dp), 0,
                          generator=torch.Generator().manual_seed(1), accountant=accountant)
    report = result.dp
    plan.check_client(**report.check_kwargs())
    assert report.events() == plan.charge_events()
    assert (report.local_steps, report.example_rate) == (plan.local_steps, plan.example_rate)
    assert (report.personal_steps, report.personal_rate) == (plan.personal_steps,
                                                              plan.personal_rate)
    # Opacus's accountant, fed by the optimizers' step hooks, saw the same steps and rates
    recorded: dict[tuple[float, float], int] = {}
    for sigma, q, n in accountant.history:
        recorded[(sigma, q)] = recorded.get((sigma, q), 0) + n
    planned: dict[tuple[float, float], int] = {}
    for e in plan.charge_events():
        planned[(e.noise_multiplier, e.sample_rate)] = \
            planned.get((e.noise_multiplier, e.sample_rate), 0) + e.steps
    assert recorded == planned
    # nothing unprotected travels with the update
    assert result.update.num_examples == 0 and dict(result.update.metrics) == {}
    assert set(result.metrics) == {"personal_loss", "shared_loss"}


def test_plan_refuses_a_client_weaker_than_planned():
    cfg = LocalTrainingConfig(batch_size=8)
    inputs = example_plan_inputs([25, 30, 40], cfg)
    plan = PrivacyPlan.for_noise(1.1, mode="example", delta=1e-5, rounds=10, client_rate=0.5,
                                 **inputs.plan_kwargs())
    dp = ExampleDP.from_plan(plan, clipping_norm=0.5, expected_batch_size=8.0)
    stronger = dataclasses.replace(dp, steps=dp.steps + 1)
    model, message, personal = _client_setup()
    result = train_client(model, message, personal, ClientData(0, np.arange(30)),
                          dataclasses.replace(cfg, example_dp=stronger), 0,
                          generator=torch.Generator())
    with pytest.raises(AccountingError, match="plan covers"):
        plan.check_client(**result.dp.check_kwargs())


# -- refusals -------------------------------------------------------------------------------
def test_personal_training_without_dp_is_refused():
    model, message, personal = _client_setup()
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.3, steps=2,
                   expected_batch_size=5.0)  # no personal DP steps
    with pytest.raises(UnsupportedClaimError, match="personal adapter"):
        train_client(model, message, personal, ClientData(0, np.arange(30)),
                     LocalTrainingConfig(personal_epochs=1, example_dp=dp), 0,
                     generator=torch.Generator())
    assert has_opacus_traces(model) == []


def test_no_personal_training_needs_no_personal_dp():
    model, message, personal = _client_setup()
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.3, steps=2,
                   expected_batch_size=5.0)
    result = train_client(model, message, personal, ClientData(0, np.arange(30)),
                          LocalTrainingConfig(personal_epochs=0, example_dp=dp), 0,
                          generator=torch.Generator())
    assert result.dp.personal_steps == 0
    for k, v in personal.items():  # the personal state did not see the data
        np.testing.assert_array_equal(result.personal[k], v)


def test_missing_generator_and_wrong_plans_are_refused():
    model, message, personal = _client_setup()
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.3, steps=2,
                   expected_batch_size=5.0, personal_sample_rate=0.3, personal_steps=2)
    with pytest.raises(ValueError, match="client 4: .*torch.Generator"):
        train_client(model, message, personal, ClientData(4, np.arange(30)),
                     LocalTrainingConfig(example_dp=dp), 0)
    user_plan = PrivacyPlan.for_noise(1.0, mode="user", delta=1e-5, rounds=5, client_rate=0.1)
    with pytest.raises(UnsupportedClaimError, match="example-level plan"):
        ExampleDP.from_plan(user_plan, clipping_norm=1.0, expected_batch_size=4.0)
    with pytest.raises(UnsupportedClaimError, match="local_epochs"):
        example_plan_inputs([30], LocalTrainingConfig(local_epochs=0))
    with pytest.raises(ValueError, match="sample_rate"):
        ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=1.5, steps=2,
                  expected_batch_size=5.0)


# -- replay, workspace hygiene --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ffm", "fedmf"])
def test_same_generator_same_update(kind):
    model, message, personal = _client_setup(kind)
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.3, steps=3,
                   expected_batch_size=5.0, personal_sample_rate=0.3, personal_steps=3)
    cfg = LocalTrainingConfig(example_dp=dp)
    data = ClientData(2, np.arange(0, 50, 2))
    source = NoiseSource(test_seed=11)

    def run(round_id: int):
        return train_client(model, message, personal, data, cfg, 0,
                            generator=torch_generator(source, round_id, data.user))

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.update.delta, b.update.delta)
    for k in a.personal:
        np.testing.assert_array_equal(a.personal[k], b.personal[k])
    assert not np.array_equal(a.update.delta, c.update.delta)
    assert has_opacus_traces(model) == []


def test_workspace_is_left_as_found():
    model, message, personal = _client_setup()
    fresh = copy.deepcopy(model)
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.3, steps=3,
                   expected_batch_size=5.0, personal_sample_rate=0.3, personal_steps=3)
    data = ClientData(0, np.arange(30))
    for engine in ("hooks", "ghost", "functorch"):
        train_client(model, message, personal, data,
                     LocalTrainingConfig(example_dp=dataclasses.replace(dp, engine=engine)), 0,
                     generator=torch.Generator())
        assert has_opacus_traces(model) == [], engine
        assert not any(p.requires_grad or p.grad is not None for p in model.parameters())
    plain = LocalTrainingConfig()
    a = train_client(model, message, personal, data, plain, 0)
    b = train_client(fresh, message, personal, data, plain, 0)
    np.testing.assert_array_equal(a.update.delta, b.update.delta)


def test_workspace_is_cleaned_after_a_failure(monkeypatch):
    import ffm_private.privacy.dpsgd as dpsgd

    model, message, personal = _client_setup()
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=1.0, sample_rate=0.9, steps=3,
                   expected_batch_size=5.0, personal_sample_rate=0.9, personal_steps=3,
                   engine="hooks")

    def boom(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(dpsgd, "_functorch_grad_samples", boom)
    with pytest.raises(RuntimeError, match="planted"):
        train_client(model, message, personal, ClientData(0, np.arange(30)),
                     LocalTrainingConfig(example_dp=dp), 0, generator=torch.Generator())
    assert has_opacus_traces(model) == []
    assert not any(p.requires_grad for p in model.parameters())


# -- it still learns ------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.mark.slow
def test_dp_training_learns_beyond_popularity(tmp_path):
    """FFM, all clients each round, example-level DP at epsilon = 8 (PRV, delta 1e-5).

    Scored with empty histories (as DP-SGD trains), the round-0 model is the pretrained item
    bias alone, below popularity; after a few DP rounds the DP-trained personal embeddings and
    shared adapter beat popularity on validation and test.
    """
    from ffm_private.config import ModelConfig, PretrainConfig
    from ffm_private.data import SyntheticConfig, generate_synthetic, leave_one_out, load_dataset
    from ffm_private.evaluation import evaluate_model, evaluate_popularity
    from ffm_private.models import FROZEN, SharedSpec, build_model, load_group
    from ffm_private.pretrain import pretrain_backbone, public_users

    generate_synthetic(tmp_path, SyntheticConfig(n_users=200, n_items=300, n_interactions=10000,
                                                 eval_negatives_reserve=99, seed=0))
    split = leave_one_out(load_dataset("synthetic", tmp_path), seed=0)
    mcfg = ModelConfig(kind="ffm", dim=32, history_length=10)
    torch.manual_seed(0)
    backbone = pretrain_backbone(mcfg, PretrainConfig(epochs=20, batch_size=256), split,
                                 public_users(split.n_users, 0.2, 0), progress=False)

    def model(rows: int):
        m = build_model(mcfg, split.n_items, rows)
        load_group(m, FROZEN, backbone)
        for p in m.parameters():
            p.requires_grad_(False)
        return m

    workspace, init = model(1), model(1)
    spec = SharedSpec.of(workspace)
    shared = state_of(init, SHARED)
    personal = init.init_personal_states(split.n_users, 0)
    rounds = 5
    cfg = LocalTrainingConfig(batch_size=16, lr=0.01, personal_lr=0.05)
    # reference size 37: taken as public knowledge of these synthetic users (rate 16 / 37)
    inputs = example_plan_inputs(None, cfg, reference_size=37)
    plan = PrivacyPlan.for_target(mode="example", target_epsilon=8.0, delta=1e-5, rounds=rounds,
                                  client_rate=1.0, **inputs.plan_kwargs())
    assert plan.epsilon <= 8.0
    dp = ExampleDP.from_plan(plan, clipping_norm=0.1,
                             expected_batch_size=inputs.expected_batch_size)
    cfg = dataclasses.replace(cfg, example_dp=dp)
    source = NoiseSource(test_seed=0)

    def metrics(use_history: bool) -> dict[str, float]:
        m = model(split.n_users)
        load_group(m, SHARED, shared)
        load_group(m, PERSONAL, personal)
        return evaluate_model(m, split, full_ranking=False, use_history=use_history)

    start = metrics(False)
    for r in range(1, rounds + 1):
        message = GlobalModelMessage(r, shared)
        deltas = []
        for u in range(split.n_users):
            res = train_client(workspace, message, {k: v[u] for k, v in personal.items()},
                               ClientData(u, split.train[u]), cfg, 0,
                               generator=torch_generator(source, r, u))
            plan.check_client(**res.dp.check_kwargs())
            deltas.append(res.update.delta)
            for k, v in res.personal.items():
                personal[k][u] = v
        shared = spec.unflatten(spec.flatten(shared) + np.mean(deltas, axis=0))
    pop = evaluate_popularity(split)
    end, with_history = metrics(False), metrics(True)
    for key in ("valid_hr@10", "test_hr@10"):
        assert start[key] < pop[key] + 0.02, (key, start, pop)
        assert end[key] > pop[key], (key, end, pop)
        assert end[key] > start[key] + 0.03, (key, end, start)
        assert with_history[key] > pop[key], (key, with_history, pop)
