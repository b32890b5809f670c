"""Dev tool: how hard is the synthetic dataset for a small CoLA? (data helper's calibration)

Trains a CoLA model (COLA_SPEC 2-4, built from cola_fast.reference ops, embedding width
--emb) for --steps iterations on the synthetic train split and reports the detection
mAP on the test split with a compact implementation of COLA_SPEC 5-6 (proposals, NMS,
ActivityNet-style AP). Not the project's trainer or evaluator; a calibration aid only.

    PYTHONPATH=. python scripts/calibrate_synthetic.py --feature-dim 256 --steps 600
"""
import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import interp1d

from cola_fast import reference as R
from cola_fast.data import SyntheticSpec, VideoDataset, make_synthetic_dataset


class CoLA(torch.nn.Module):
    def __init__(self, d, c, emb):
        super().__init__()
        self.embed = torch.nn.Conv1d(d, emb, 3, padding=1)
        self.drop = torch.nn.Dropout(0.7)
        self.cls = torch.nn.Conv1d(emb, c, 1, bias=False)

    def forward(self, x):
        e = F.relu(self.embed(x.transpose(1, 2)))
        cas = F.relu(self.cls(self.drop(e))).transpose(1, 2)
        return e.transpose(1, 2), cas


def proposals(scores, cas, act, T_orig, vs_thr=0.2):
    T = cas.shape[0]
    pred = np.where(scores >= vs_thr)[0]
    if len(pred) == 0:
        pred = np.array([scores.argmax()])

    def norm(x):
        lo, hi = np.maximum(x.min(0), 0), np.maximum(x.max(0), 0)
        d = hi - lo
        d = np.where(d <= 0, 1, d)
        return np.clip((x - lo) / d, 0, 1)

    pos = np.arange(0, T, 1 / 24)

    def up(x):
        if T == 1:
            return np.repeat(x, len(pos), axis=0)
        return interp1d(np.arange(T), x, axis=0, fill_value="extrapolate")(pos)

    casn, actn = up(norm(cas)), up(norm(act))
    L = len(pos)
    f = 16 * T_orig / (24 * T * 25)
    out = []
    for c in pred:
        w = casn[:, c]
        props = []
        fams = [(w * (w >= th), w * (w >= th) > 0) for th in np.arange(0, 0.25, 0.025)]
        fams += [(w, actn >= th) for th in np.arange(0.1, 0.925, 0.025)]
        for sc, cand in fams:
            if not cand.any():
                continue
            d = np.diff(np.concatenate([[0], cand.astype(np.int8), [0]]))
            starts, ends = np.where(d == 1)[0], np.where(d == -1)[0] - 1
            cs = np.concatenate([[0], np.cumsum(sc)])
            for s, e in zip(starts, ends):
                n = e - s + 1
                if n < 2:
                    continue
                inner = (cs[e + 1] - cs[s]) / n
                os_, oe = max(0, int(s - 0.25 * n)), min(L - 1, int(e + 0.25 * n))
                cnt = (s - os_) + (oe - e)
                outer = ((cs[s] - cs[os_]) + (cs[oe + 1] - cs[e + 1])) / cnt if cnt > 0 else 0.0
                props.append((inner - outer + 0.2 * scores[c], s * f, (e + 1) * f))
        props.sort(key=lambda p: -p[0])
        keep = []
        P = np.array(props) if props else np.zeros((0, 3))
        alive = np.ones(len(P), bool)
        for i in range(len(P)):
            if not alive[i]:
                continue
            keep.append(P[i])
            inter = np.maximum(0, np.minimum(P[i, 2], P[:, 2]) - np.maximum(P[i, 1], P[:, 1]) + 1)
            ov = inter / ((P[i, 2] - P[i, 1] + 1) + (P[:, 2] - P[:, 1] + 1) - inter)
            alive &= ov < 0.6
        out += [(int(c), float(p[0]), float(p[1]), float(p[2])) for p in keep]
    return out


def detection_map(preds, gts, n_classes, thresholds=np.arange(0.1, 0.75, 0.1)):
    """preds: [(vid, c, score, s, e)]; gts: {vid: [(c, s, e)]} -> (mAP per threshold)."""
    aps = np.zeros((len(thresholds), n_classes))
    present = sorted({c for v in gts.values() for c, _, _ in v})
    for c in present:
        gt_c = {}
        npos = 0
        for v, lst in gts.items():
            segs = np.array([(s, e) for cc, s, e in lst if cc == c]).reshape(-1, 2)
            gt_c[v] = segs
            npos += len(segs)
        P = [p for p in preds if p[1] == c]
        if not P:
            continue
        order = np.argsort([p[2] for p in P])[::-1]
        P = [P[i] for i in order]
        for ti, thr in enumerate(thresholds):
            used = {v: np.zeros(len(s), bool) for v, s in gt_c.items()}
            tp = np.zeros(len(P))
            for j, (v, _, _, s, e) in enumerate(P):
                g = gt_c.get(v)
                if g is None or len(g) == 0:
                    continue
                inter = np.clip(np.minimum(e, g[:, 1]) - np.maximum(s, g[:, 0]), 0, None)
                iou = inter / ((e - s) + (g[:, 1] - g[:, 0]) - inter)
                for k in np.argsort(-iou, kind="stable"):
                    if iou[k] < thr:
                        break
                    if used[v][k]:
                        continue
                    used[v][k] = True
                    tp[j] = 1
                    break
            ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
            rec, prec = ctp / npos, ctp / (ctp + cfp)
            mprec = np.concatenate([[0], prec, [0]])
            mrec = np.concatenate([[0], rec, [1]])
            for i in range(len(mprec) - 2, -1, -1):
                mprec[i] = max(mprec[i], mprec[i + 1])
            idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
            aps[ti, c] = np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])
    return aps[:, present].mean(1)


def evaluate(model, te, k_div=5):
    model.eval()
    preds, gts = [], {}
    cidx = {c: k for k, c in enumerate(te.class_names)}
    with torch.no_grad():
        for i in range(len(te)):
            it = te[i]
            x = it["features"][None]
            _, cas = model(x)
            k = max(1, x.shape[1] // k_div)
            scores = R.video_scores(cas, k)[0].numpy()
            cas = cas[0].numpy()
            for c, sc, s, e in proposals(scores, cas, cas.sum(1), it["num_snippets"]):
                preds.append((it["vid"], c, sc, s, e))
            gts[it["vid"]] = [(cidx[l], s, e) for l, s, e in te.annotations[it["vid"]]]
    model.train()
    return detection_map(preds, gts, len(te.class_names))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=None)
    ap.add_argument("--feature-dim", type=int, default=256)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--num-segments", type=int, default=750)
    ap.add_argument("--emb", type=int, default=128)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    spec = SyntheticSpec(feature_dim=a.feature_dim, time_scale=a.time_scale)
    root = a.root or make_synthetic_dataset(f"/tmp/cola_synth_{spec.tag()}", spec)
    tr = VideoDataset(root, "train", num_segments=a.num_segments, sampling="random")
    te = VideoDataset(root, "test", num_segments=a.num_segments, sampling="uniform", class_names=tr.class_names)
    model = CoLA(tr.feature_dim, len(tr.class_names), a.emb)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=5e-4)
    N = a.num_segments
    ke, kh = N // 5, N // 20
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    best = None
    for step in range(1, a.steps + 1):
        ids = rng.choice(len(tr), a.batch, replace=False)
        batch = [tr.get(int(i), rng) for i in ids]
        x = torch.stack([b["features"] for b in batch])
        y = torch.stack([b["label"] for b in batch])
        emb, cas = model(x)
        act = cas.sum(2)
        keep = (torch.rand_like(act) < 0.4).to(act.dtype)
        ea, eb, ha, hb = R.mine_snippets(act.detach(), keep, ke, kh)
        loss_a = R.action_loss(R.video_scores(cas, ke), y)
        loss_s = R.snico_loss(emb, ea, eb, ha, hb)
        loss = loss_a + a.lam * loss_s
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0 or step == a.steps:
            m = evaluate(model, te)
            print(f"step {step} loss {loss_a.item():.4f}+{loss_s.item():.3f} mAP@0.1:0.7 "
                  + " ".join(f"{v * 100:.1f}" for v in m) + f" avg {m.mean() * 100:.1f}  ({time.time() - t0:.0f}s)",
                  flush=True)
            best = m.mean() if best is None else max(best, m.mean())
    print(f"best avg mAP {best * 100:.1f}")


if __name__ == "__main__":
    main()
