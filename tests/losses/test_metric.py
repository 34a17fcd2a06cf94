"""Metric losses: hand-worked values, the center update, mining, gradcheck, bad input.

Expected numbers are worked on paper for tiny 2-D batches, or computed by the explicit
pair/triplet loops of the ``ref_*`` functions below (plain Python floats, never the library).
"""
import itertools
import math

import pytest
import torch

import facemargin.losses as losses
from facemargin.losses import (CenterLoss, COCOLoss, ContrastiveLoss, MarginalLoss, RangeLoss,
                               TripletLoss)

DT = torch.float64


def t(rows, dtype=DT, grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=grad)


def lab(values):
    return torch.tensor(values, dtype=torch.long)


# ------------------------------------------------------------------------------------------------
# independent references: explicit loops over pairs / triplets on Python floats
# ------------------------------------------------------------------------------------------------


def _norm(v):
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def _sq(u, v):
    return sum((a - b) ** 2 for a, b in zip(u, v))


def ref_center(x, y, centers):
    return 0.5 * sum(_sq(x[i], centers[y[i]]) for i in range(len(x))) / len(x)


def ref_contrastive(x, y, margin, normalize):
    pts = [_norm(v) for v in x] if normalize else x
    terms = []
    for i, j in itertools.combinations(range(len(pts)), 2):
        d = math.sqrt(_sq(pts[i], pts[j]))
        terms.append(0.5 * (d * d if y[i] == y[j] else max(0.0, margin - d) ** 2))
    return sum(terms) / len(terms)


def ref_triplets(x, y, mining, normalize):
    pts = [_norm(v) for v in x] if normalize else x
    B = len(pts)
    d = [[_sq(pts[i], pts[j]) for j in range(B)] for i in range(B)]
    out = []
    for a in range(B):
        negs = [n for n in range(B) if y[n] != y[a]]
        for p in range(B):
            if p == a or y[p] != y[a] or not negs:
                continue
            if mining == "all":
                out += [(a, p, n) for n in negs]
            elif mining == "hard":
                out.append((a, p, min(negs, key=lambda n: (d[a][n], n))))
            else:
                semi = [n for n in negs if d[a][n] > d[a][p]]
                if semi:
                    out.append((a, p, min(semi, key=lambda n: (d[a][n], n))))
                else:
                    out.append((a, p, max(negs, key=lambda n: (d[a][n], -n))))
    return out, d


def ref_triplet_loss(x, y, margin, mining, normalize):
    trip, d = ref_triplets(x, y, mining, normalize)
    if not trip:
        return 0.0
    return sum(max(0.0, d[a][p] - d[a][n] + margin) for a, p, n in trip) / len(trip)


def ref_range(x, y, k, margin, alpha, beta, squared):
    dist = (lambda u, v: _sq(u, v)) if squared else (lambda u, v: math.sqrt(_sq(u, v)))
    classes = sorted(set(y))
    intra = 0.0
    for c in classes:
        idx = [i for i in range(len(x)) if y[i] == c]
        ds = sorted((dist(x[i], x[j]) for i, j in itertools.combinations(idx, 2)), reverse=True)[:k]
        if ds:
            intra += len(ds) / sum(1.0 / v for v in ds)
    inter = 0.0
    if len(classes) > 1:
        centres = []
        for c in classes:
            idx = [i for i in range(len(x)) if y[i] == c]
            centres.append([sum(x[i][q] for i in idx) / len(idx) for q in range(len(x[0]))])
        dmin = min(dist(u, v) for u, v in itertools.combinations(centres, 2))
        inter = max(margin - dmin, 0.0)
    return alpha * intra + beta * inter


def ref_marginal(x, y, theta, xi):
    pts = [_norm(v) for v in x]
    m = len(pts)
    s = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                yij = 1.0 if y[i] == y[j] else -1.0
                s += max(0.0, xi - yij * (theta - _sq(pts[i], pts[j])))
    return s / (m * m - m)


def rand_batch(seed, B=8, D=3, C=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=DT)
    y = torch.arange(B) % C
    return x, y


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------


def test_registry_names_build_each_metric_loss():
    names = {"center": CenterLoss, "contrastive": ContrastiveLoss, "triplet": TripletLoss,
             "coco": COCOLoss, "range": RangeLoss, "marginal": MarginalLoss}
    assert set(names) <= set(losses.available())
    for name, cls in names.items():
        obj = losses.build(name, embedding_size=4, num_classes=5)
        assert type(obj) is cls
    cl = losses.build("center", embedding_size=4, num_classes=5, alpha=0.25)
    assert cl.centers.shape == (5, 4) and cl.alpha == 0.25
    assert losses.is_head("coco") and not losses.is_head("triplet")


# ------------------------------------------------------------------------------------------------
# center loss
# ------------------------------------------------------------------------------------------------


def _center_case():
    cl = CenterLoss(embedding_size=2, num_classes=3, alpha=0.5).double()
    cl.centers.copy_(t([[1.0, 0.0], [0.0, 1.0], [5.0, -5.0]]))
    x = t([[2.0, 1.0], [0.0, 0.0], [1.0, 3.0]], grad=True)
    y = lab([0, 0, 1])
    return cl, x, y


def test_center_value_gradient_and_update_by_hand():
    cl, x, y = _center_case()
    loss = cl(x, y)
    # x − c: (1, 1), (−1, 0), (1, 2) -> squared norms 2, 1, 5 -> ½·8/3
    assert loss.item() == pytest.approx(4.0 / 3.0, abs=1e-12)
    # nothing moves before backward
    assert torch.equal(cl.centers, t([[1.0, 0.0], [0.0, 1.0], [5.0, -5.0]]))
    loss.backward()
    # gradient (x − c)/B with the centres of the forward pass
    assert torch.allclose(x.grad, t([[1.0, 1.0], [-1.0, 0.0], [1.0, 2.0]]) / 3, atol=1e-12)
    # class 0: n=2, Σ(c − x) = (−1,−1) + (1,0) = (0,−1), /3 -> c0 = (1,0) − ½(0,−⅓) = (1, 1/6)
    # class 1: n=1, (c − x) = (−1,−2), /2 -> c1 = (0,1) − ½(−½,−1) = (¼, 3/2); class 2 untouched
    expected = t([[1.0, 1.0 / 6.0], [0.25, 1.5], [5.0, -5.0]])
    assert torch.allclose(cl.centers, expected, atol=1e-12)


def test_center_eval_mode_and_no_grad_do_not_update():
    cl, x, y = _center_case()
    before = cl.centers.clone()
    cl.eval()
    loss = cl(x, y)
    loss.backward()
    assert torch.equal(cl.centers, before)
    assert torch.allclose(x.grad, t([[1.0, 1.0], [-1.0, 0.0], [1.0, 2.0]]) / 3, atol=1e-12)
    cl.train()
    with torch.no_grad():
        cl(x, y)
    assert torch.equal(cl.centers, before)


def test_center_two_steps_follow_the_rule_and_state_dict():
    cl = CenterLoss(3, 4, alpha=0.3).double()
    x1, _ = rand_batch(1, B=6, D=3)
    y1 = lab([0, 1, 1, 3, 0, 1])
    c = [[0.0] * 3 for _ in range(4)]
    for step in range(2):
        xs = (x1 + step).tolist()
        x = t(xs, grad=True)
        loss = cl(x, y1)
        assert loss.item() == pytest.approx(ref_center(xs, y1.tolist(), c), rel=1e-12)
        loss.backward()
        g = [[(xs[i][q] - c[y1[i]][q]) / 6 for q in range(3)] for i in range(6)]
        assert torch.allclose(x.grad, t(g), atol=1e-12)
        new = [row[:] for row in c]
        for j in set(y1.tolist()):
            idx = [i for i in range(6) if y1[i] == j]
            for q in range(3):
                s = sum(c[j][q] - xs[i][q] for i in idx)
                new[j][q] = c[j][q] - 0.3 * s / (1 + len(idx))
        c = new
        assert torch.allclose(cl.centers, t(c), atol=1e-12)
    assert torch.allclose(cl.state_dict()["centers"], t(c))
    assert not any(p is cl.centers for p in cl.parameters())


def test_center_gradcheck_float64():
    cl = CenterLoss(3, 3).double().eval()
    cl.centers.copy_(torch.randn(3, 3, dtype=DT))
    x, y = rand_batch(2, B=5, D=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: cl(v, y), (x,))


# ------------------------------------------------------------------------------------------------
# contrastive loss
# ------------------------------------------------------------------------------------------------


def test_contrastive_by_hand_unnormalised():
    x = t([[0.0, 0.0], [0.0, 0.5], [0.3, 0.4]])
    y = lab([0, 0, 1])
    # (0,1) same, d=0.5; (0,2) different, d=0.5; (1,2) different, d=sqrt(0.1); margin 1
    expected = (0.5 * 0.25 + 0.5 * 0.5 ** 2 + 0.5 * (1 - math.sqrt(0.1)) ** 2) / 3
    got = ContrastiveLoss(margin=1.0, normalize=False)(x, y)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_contrastive_by_hand_normalised():
    x = t([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    y = lab([0, 0, 1])
    # x̂ = (1,0), (0,1), (1,1)/√2: same pair d² = 2; both others d² = 2 − √2
    d = math.sqrt(2 - math.sqrt(2))
    expected = (0.5 * 2 + 2 * 0.5 * (1 - d) ** 2) / 3
    assert ContrastiveLoss()(x, y).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_contrastive_matches_pair_loop(normalize):
    x, y = rand_batch(3, B=7, D=4)
    got = ContrastiveLoss(margin=1.3, normalize=normalize)(x, y)
    assert got.item() == pytest.approx(ref_contrastive(x.tolist(), y.tolist(), 1.3, normalize), rel=1e-10)


@pytest.mark.parametrize("normalize", [True, False])
def test_contrastive_identical_points_give_finite_gradient(normalize):
    x = t([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], grad=True)
    y = lab([0, 1, 1, 1])  # (0,1) negative at d=0, (2,3) positive at d=0
    loss = ContrastiveLoss(margin=1.0, normalize=normalize)(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    d02 = math.sqrt(2.0)
    expected = (0.5 * 1.0 + 0.5 * max(0, 1 - d02) ** 2 * 2 + 0.5 * 2.0 * 2 + 0) / 6
    assert loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_contrastive_gradcheck_float64(normalize):
    x, y = rand_batch(4, B=6, D=3)
    x = x * 0.4
    margin = 1.0
    pts = [_norm(v) for v in x.tolist()] if normalize else x.tolist()
    gaps = [abs(math.sqrt(_sq(pts[i], pts[j])) - margin) for i, j in itertools.combinations(range(6), 2)]
    assert min(gaps) > 1e-3  # away from the hinge
    x.requires_grad_(True)
    loss = ContrastiveLoss(margin=margin, normalize=normalize)
    assert torch.autograd.gradcheck(lambda v: loss(v, y), (x,))


def test_contrastive_single_sample_is_zero_with_grad_path():
    x = t([[1.0, 2.0]], grad=True)
    loss = ContrastiveLoss()(x, lab([0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


# ------------------------------------------------------------------------------------------------
# triplet loss
# ------------------------------------------------------------------------------------------------

# points on a line: index -> (position, label); squared distances are exact in binary
LINE = [(-0.5, 0), (2.0, 0), (1.0, 1), (5.0, 1), (-2.5, 2)]
# d01 = 6.25  d02 = 2.25  d03 = 30.25  d04 = 4
# d12 = 1     d13 = 9     d14 = 20.25
# d23 = 16    d24 = 12.25
# d34 = 56.25


def _line():
    x = t([[p, 0.0] for p, _ in LINE], grad=True)
    y = lab([c for _, c in LINE])
    return x, y


def _as_set(trip):
    return set(zip(*(v.tolist() for v in trip)))


def test_triplet_semihard_negatives_listed_by_hand():
    x, y = _line()
    tl = TripletLoss(margin=0.2, mining="semihard", normalize=False)
    # (0,1): d_ap 6.25, negatives 2:2.25 3:30.25 4:4 -> farther than 6.25: {3} -> 3
    # (1,0): d_ap 6.25, negatives 2:1 3:9 4:20.25 -> {3, 4} -> closest 3
    # (2,3): d_ap 16, negatives 0:2.25 1:1 4:12.25 -> none farther -> fallback farthest 4
    # (3,2): d_ap 16, negatives 0:30.25 1:9 4:56.25 -> {0, 4} -> closest 0
    assert _as_set(tl.triplets(x, y)) == {(0, 1, 3), (1, 0, 3), (2, 3, 4), (3, 2, 0)}
    # hinge: only (2,3,4) is active: 16 − 12.25 + 0.2
    assert tl(x, y).item() == pytest.approx((16 - 12.25 + 0.2) / 4, abs=1e-12)


def test_triplet_semihard_needs_strictly_farther_negative():
    # positions 0, 2 (class 0) and −2, 3 (class 1)
    x = t([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0], [3.0, 0.0]])
    y = lab([0, 0, 1, 1])
    tl = TripletLoss(mining="semihard", normalize=False)
    # (0,1): d_ap 4; negatives 2:4 (a tie, not farther) 3:9 -> 3
    # (1,0): d_ap 4; negatives 2:16 3:1 -> 2
    # (2,3): d_ap 25; negatives 0:4 1:16 -> none farther -> farthest 1
    # (3,2): d_ap 25; negatives 0:9 1:1 -> none farther -> farthest 0
    assert _as_set(tl.triplets(x, y)) == {(0, 1, 3), (1, 0, 2), (2, 3, 1), (3, 2, 0)}


def test_triplet_hard_negatives_listed_by_hand():
    x, y = _line()
    tl = TripletLoss(margin=0.2, mining="hard", normalize=False)
    assert _as_set(tl.triplets(x, y)) == {(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)}
    expected = ((6.25 - 2.25 + 0.2) + (6.25 - 1 + 0.2) + (16 - 1 + 0.2) + (16 - 9 + 0.2)) / 4
    assert tl(x, y).item() == pytest.approx(expected, abs=1e-12)


def test_triplet_all_lists_every_negative():
    x, y = _line()
    tl = TripletLoss(margin=0.2, mining="all", normalize=False)
    expected_set = {(a, p, n) for a, p in [(0, 1), (1, 0), (2, 3), (3, 2)]
                    for n in range(5) if LINE[n][1] != LINE[a][1]}
    assert len(expected_set) == 12
    assert _as_set(tl.triplets(x, y)) == expected_set
    # active hinges: (0,1,2) 4.2, (0,1,4) 2.45, (1,0,2) 5.45, (2,3,0) 13.95, (2,3,1) 15.2,
    # (2,3,4) 3.95, (3,2,1) 7.2; the other five are 0
    expected = (4.2 + 2.45 + 5.45 + 13.95 + 15.2 + 3.95 + 7.2) / 12
    assert tl(x, y).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
@pytest.mark.parametrize("normalize", [True, False])
def test_triplet_matches_loop_reference(mining, normalize):
    x, y = rand_batch(5, B=12, D=4, C=4)
    tl = TripletLoss(margin=0.3, mining=mining, normalize=normalize)
    trip, _ = ref_triplets(x.tolist(), y.tolist(), mining, normalize)
    assert _as_set(tl.triplets(x, y)) == set(trip)
    assert len(tl.triplets(x, y)[0]) == len(trip)
    ref = ref_triplet_loss(x.tolist(), y.tolist(), 0.3, mining, normalize)
    assert tl(x, y).item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_triplet_no_triplet_gives_zero(labels):
    x = torch.randn(4, 3, dtype=DT, requires_grad=True)
    tl = TripletLoss()
    loss = tl(x, lab(labels))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))
    assert all(v.numel() == 0 for v in tl.triplets(x, lab(labels)))


@pytest.mark.parametrize("mining", ["semihard", "hard", "all"])
def test_triplet_gradcheck_float64(mining):
    x, y = rand_batch(6, B=8, D=3, C=3)
    tl = TripletLoss(margin=0.3, mining=mining)
    trip, d = ref_triplets(x.tolist(), y.tolist(), mining, True)
    # away from kinks: no hinge at 0, no near-tie that could switch the mined negative
    assert min(abs(d[a][p] - d[a][n] + 0.3) for a, p, n in trip) > 1e-4
    flat = sorted(d[i][j] for i in range(8) for j in range(i + 1, 8))
    assert min(b - a for a, b in zip(flat, flat[1:])) > 1e-5
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: tl(v, y), (x,))


def test_triplet_bad_mining():
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="hardest")


# ------------------------------------------------------------------------------------------------
# COCO loss
# ------------------------------------------------------------------------------------------------


def test_coco_logits_and_loss_by_hand():
    h = COCOLoss(embedding_size=2, num_classes=3, alpha=2.0).double()
    with torch.no_grad():
        h.weight.copy_(t([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    x = t([[3.0, 4.0]])  # x̂ = (0.6, 0.8); ĉ = (1,0), (0,1), (1,1)/√2
    z = [2 * 0.6, 2 * 0.8, 2 * 1.4 / math.sqrt(2)]
    assert torch.allclose(h.logits(x), t([z]), atol=1e-12)
    assert torch.allclose(h.logits(x, lab([1])), t([z]), atol=1e-12)  # no margin
    expected = -(z[1] - math.log(sum(math.exp(v) for v in z)))
    assert h(x, lab([1])).item() == pytest.approx(expected, abs=1e-12)
    assert isinstance(h.weight, torch.nn.Parameter) and h.weight.shape == (3, 2)


def test_coco_alpha_bound_reaches_target_posterior():
    # K = 2 with antipodal centroids and the feature on its centroid is where the bound is tight
    for eps in (0.9, 0.99, 0.999):
        h = COCOLoss(embedding_size=2, num_classes=2, eps=eps).double()
        with torch.no_grad():
            h.weight.copy_(t([[1.0, 0.0], [-1.0, 0.0]]))
        p = torch.softmax(h.logits(t([[5.0, 0.0]])), dim=1)[0, 0].item()
        assert p == pytest.approx(eps, rel=1e-7)  # the scale buffer is stored in float32
    # more classes need a larger scale; a larger target needs a larger scale
    assert COCOLoss.alpha_bound(1000) > COCOLoss.alpha_bound(10)
    assert COCOLoss.alpha_bound(10, 0.999) > COCOLoss.alpha_bound(10, 0.99)
    assert float(COCOLoss(4, 10).alpha) == pytest.approx(COCOLoss.alpha_bound(10, 0.99))


def test_coco_gradcheck_float64_and_loss_gradient():
    torch.manual_seed(0)
    h = COCOLoss(3, 4, alpha=3.0).double()
    x, y = rand_batch(7, B=5, D=3, C=4)
    x.requires_grad_(True)
    w = h.weight
    assert torch.autograd.gradcheck(lambda v, wt: torch.nn.functional.linear(
        3.0 * torch.nn.functional.normalize(v, dim=1), torch.nn.functional.normalize(wt, dim=1)), (x, w))
    assert torch.autograd.gradcheck(lambda v: h.logits(v), (x,))
    assert torch.autograd.gradcheck(lambda v: h(v, y), (x,))
    # the loss is the mean cross-entropy of those logits, gradient included
    loss = h(x, y)
    gx, gw = torch.autograd.grad(loss, (x, w))
    ref = -sum(torch.log_softmax(h.logits(x), dim=1)[i, y[i]] for i in range(5)) / 5
    rx, rw = torch.autograd.grad(ref, (x, w))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)


def test_coco_bad_arguments():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        COCOLoss(4, 1)
    with pytest.raises(ValueError, match="eps"):
        COCOLoss(4, 10, eps=1.0)
    with pytest.raises(ValueError, match="alpha"):
        COCOLoss(4, 10, alpha=-1.0)
    assert float(COCOLoss(4, 1, alpha=5.0).alpha) == 5.0


# ------------------------------------------------------------------------------------------------
# range loss
# ------------------------------------------------------------------------------------------------

RANGE_X = [[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 7.0], [-2.0, 0.0]]
RANGE_Y = [0, 0, 0, 1, 1, 2]


def test_range_by_hand_squared():
    rl = RangeLoss(k=2, margin=20.0, alpha=0.5, beta=2.0)
    # class 0: squared ranges 9, 1, 10 -> two largest 10, 9 -> 2/(1/10 + 1/9) = 180/19
    # class 1: one pair, 4 -> 4; class 2: a single sample, no range
    # centres (1, 1/3), (5, 6), (−2, 0): closest pair 0–2, squared distance 9 + 1/9 = 82/9
    expected = 0.5 * (180 / 19 + 4) + 2.0 * (20 - 82 / 9)
    assert rl(t(RANGE_X), lab(RANGE_Y)).item() == pytest.approx(expected, abs=1e-12)
    assert rl.intra(t(RANGE_X), lab(RANGE_Y)).item() == pytest.approx(180 / 19 + 4, abs=1e-12)
    assert rl.inter(t(RANGE_X), lab(RANGE_Y)).item() == pytest.approx(20 - 82 / 9, abs=1e-12)


def test_range_by_hand_euclidean():
    rl = RangeLoss(k=2, margin=5.0, alpha=1.0, beta=1.0, squared=False)
    expected = 2 / (1 / math.sqrt(10) + 1 / 3) + 2.0 + (5 - math.sqrt(82) / 3)
    assert rl(t(RANGE_X), lab(RANGE_Y)).item() == pytest.approx(expected, abs=1e-12)


def test_range_defaults_and_margin_inactive():
    rl = RangeLoss()
    assert (rl.k, rl.margin, rl.alpha, rl.beta, rl.squared) == (2, 2e4, 1e-4, 1e-3, True)
    far = RangeLoss(margin=1.0, alpha=1.0, beta=1.0)
    assert far.inter(t(RANGE_X), lab(RANGE_Y)).item() == 0.0  # 82/9 > 1


@pytest.mark.parametrize("k,squared", [(1, True), (2, True), (3, False)])
def test_range_matches_loop_reference(k, squared):
    x, _ = rand_batch(8, B=11, D=3)
    y = lab([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0])
    rl = RangeLoss(k=k, margin=10.0, alpha=0.7, beta=1.3, squared=squared)
    ref = ref_range(x.tolist(), y.tolist(), k, 10.0, 0.7, 1.3, squared)
    assert rl(x, y).item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("squared", [True, False])
def test_range_gradcheck_float64(squared):
    x, _ = rand_batch(9, B=7, D=3)
    y = lab([0, 0, 0, 1, 1, 1, 2])
    x.requires_grad_(True)
    rl = RangeLoss(k=2, margin=50.0, alpha=1.0, beta=1.0, squared=squared)
    assert rl.inter(x, y).item() > 0  # the inter term is active
    assert torch.autograd.gradcheck(lambda v: rl(v, y), (x,))


def test_range_degenerate_batches():
    x = t([[1.0, 2.0], [3.0, 4.0]], grad=True)
    rl = RangeLoss(margin=100.0, alpha=1.0, beta=1.0)
    # two singletons: no range; centres 8 apart (squared) -> 100 − 8
    assert rl(x, lab([0, 1])).item() == pytest.approx(92.0)
    # one class: no inter term; one pair of squared distance 8
    loss = rl(x, lab([1, 1]))
    assert loss.item() == pytest.approx(8.0)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    same = t([[1.0, 1.0], [1.0, 1.0]], grad=True)  # zero range: finite, ~0
    z = rl(same, lab([0, 0]))
    z.backward()
    assert abs(z.item()) < 1e-9 and torch.isfinite(same.grad).all()


# ------------------------------------------------------------------------------------------------
# marginal loss
# ------------------------------------------------------------------------------------------------


def test_marginal_by_hand():
    x = t([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    y = lab([0, 0, 1, 1])
    # x̂: (1,0) (0,1) (−1,0) (1,1)/√2; with s = √2:
    # (0,1) same  d²=2      -> 0.3 − (1.2 − 2)       = 1.1
    # (0,2) diff  d²=4      -> 0.3 + (1.2 − 4) < 0    = 0
    # (0,3) diff  d²=2 − s  -> 0.3 + 1.2 − (2 − s)   = s − 0.5
    # (1,2) diff  d²=2      -> 0.3 + 1.2 − 2 < 0      = 0
    # (1,3) diff  d²=2 − s  -> s − 0.5
    # (2,3) same  d²=2 + s  -> 0.3 − (1.2 − 2 − s)    = 1.1 + s
    # ordered pairs count twice; m² − m = 12
    s = math.sqrt(2)
    expected = 2 * (1.1 + 2 * (s - 0.5) + 1.1 + s) / 12
    assert MarginalLoss()(x, y).item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.2 + s / 2)


def test_marginal_matches_loop_reference_and_defaults():
    x, y = rand_batch(10, B=9, D=4)
    ml = MarginalLoss()
    assert (ml.theta, ml.xi) == (1.2, 0.3)
    assert ml(x, y).item() == pytest.approx(ref_marginal(x.tolist(), y.tolist(), 1.2, 0.3), rel=1e-10)
    ml2 = MarginalLoss(theta=0.9, xi=0.5)
    assert ml2(x, y).item() == pytest.approx(ref_marginal(x.tolist(), y.tolist(), 0.9, 0.5), rel=1e-10)


def test_marginal_gradcheck_float64():
    x, y = rand_batch(11, B=6, D=3)
    pts = [_norm(v) for v in x.tolist()]
    for i, j in itertools.combinations(range(6), 2):
        yij = 1 if y[i] == y[j] else -1
        assert abs(0.3 - yij * (1.2 - _sq(pts[i], pts[j]))) > 1e-4  # away from the hinge
    x.requires_grad_(True)
    ml = MarginalLoss()
    assert torch.autograd.gradcheck(lambda v: ml(v, y), (x,))


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

ALL = ["center", "contrastive", "triplet", "coco", "range", "marginal"]


def _built(name):
    return losses.build(name, embedding_size=3, num_classes=4)


@pytest.mark.parametrize("name", ALL)
def test_bad_input_errors(name):
    loss = _built(name)
    x = torch.randn(4, 3)
    y = lab([0, 1, 2, 3])
    loss(x, y)  # fine
    with pytest.raises(ValueError, match="embedding width 5"):
        loss(torch.randn(4, 5), y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss(x, lab([0, 1, 2, 4]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss(x, lab([0, -1, 2, 3]))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite .*rows \[2\]"):
        loss(bad, y)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        loss(bad, y)
    with pytest.raises(ValueError, match="empty batch"):
        loss(torch.zeros(0, 3), lab([]))
    with pytest.raises(ValueError, match="shape"):
        loss(x, lab([0, 1, 2]))
    with pytest.raises(ValueError, match="integers"):
        loss(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))


@pytest.mark.parametrize("name", ["contrastive", "triplet", "range", "marginal"])
def test_weight_free_losses_work_without_sizes(name):
    loss = losses.build(name)
    x, y = rand_batch(12, B=6, D=5)
    assert torch.isfinite(loss(x, y))
    with pytest.raises(ValueError, match="empty batch"):
        loss(torch.zeros(0, 5), lab([]))


@pytest.mark.parametrize("ctor", [
    lambda: CenterLoss(0, 3), lambda: CenterLoss(3, 3, alpha=-0.1),
    lambda: ContrastiveLoss(margin=-1.0), lambda: TripletLoss(margin=float("nan")),
    lambda: RangeLoss(k=0), lambda: RangeLoss(margin=-1.0), lambda: MarginalLoss(xi=-0.3),
    lambda: ContrastiveLoss(embedding_size=0),
])
def test_bad_hyper_parameters(ctor):
    with pytest.raises(ValueError):
        ctor()


@pytest.mark.parametrize("name", ALL)
def test_float32_and_bfloat16_inputs_are_finite(name):
    loss = _built(name)
    x, y = rand_batch(13, B=8, D=3, C=4)
    for dtype in (torch.float32, torch.bfloat16):
        xx = x.to(dtype).requires_grad_(True)
        out = loss(xx, y)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(xx.grad).all()
